"""Training: it learns the toy translation, resumes exactly, schedules and configures as
documented, and keeps DistributedDataParallel ranks in step."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bids_harmonize.model import TrainConfig, Trainer, load_bundle, train
from bids_harmonize.model.bundle import CARD_NAME, WEIGHTS_NAME
from bids_harmonize.model.checkpoint import CHECKPOINT_NAME
from bids_harmonize.model.data import SliceSampler, stack_volumes
from bids_harmonize.model.recipes import RECIPES
from bids_harmonize.model.train_config import lr_factor
from bids_harmonize.model.training_log import LOG_NAME
from toy_data import anatomy, site_a, site_b, tissue_labels, tissue_means, two_site_volumes

SITES = ["siteA", "siteB"]
TIMING_FIELDS = {"elapsed_s", "samples_per_s"}


def read_log(bundle_dir: Path) -> list[dict]:
    lines = (bundle_dir / "training" / LOG_NAME).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines]


@pytest.mark.slow
def test_training_learns_to_translate_between_the_toy_sites(tmp_path, tiny_config):
    """The CPU recipe's optimisation on the toy sites (whole 32 px slices: the toy volumes are
    smaller than its crops). The style-aware layout starts at the identity, so the cycle error
    starts near 0 and must stay small while the translation moves toward site B."""
    volumes, labels = two_site_volumes(per_site=4, seed=0)
    config = RECIPES["cpu"].train_config(
        iterations=200, batch_size=4, log_every=50, checkpoint_every=200, style_slices_per_site=64, crop_size=None
    )
    bundle = load_bundle(train(volumes, labels, SITES, tiny_config, config, tmp_path, progress=False))
    log = read_log(tmp_path)
    assert log[-1]["g_cycle"] < 0.05 and log[-1]["g_identity"] == 0.0
    # An unseen site-A head translated to site B: its tissue intensities should move toward
    # those of a site-B head (measured: mean tissue-intensity distance 0.325 -> 0.120).
    rng = np.random.default_rng(123)
    tissue_a, tissue_b = anatomy(rng), anatomy(rng)
    image_a, labels_a = site_a(tissue_a), tissue_labels(tissue_a)
    target = tissue_means(site_b(tissue_b), tissue_labels(tissue_b))

    def distance_to_site_b(image: np.ndarray) -> float:
        return float(np.abs(tissue_means(image, labels_a) - target).mean())

    translated = bundle.harmonize(image_a, target_site="siteB", source_site="siteA")
    print(f"distance to site B: {distance_to_site_b(image_a):.3f} -> {distance_to_site_b(translated):.3f}")
    assert distance_to_site_b(translated) < 0.8 * distance_to_site_b(image_a)


class SimulatedCrash(Exception):
    pass


def test_interrupted_training_resumes_on_the_uninterrupted_trajectory(tmp_path, toy_data, tiny_config, monkeypatch):
    volumes, labels = toy_data
    config = TrainConfig(iterations=8, batch_size=2, log_every=2, checkpoint_every=4, seed=5, style_slices_per_site=8)
    straight = train(volumes, labels, SITES, tiny_config, config, tmp_path / "straight", progress=False)

    save_checkpoint = Trainer.save_checkpoint

    def save_then_crash(trainer: Trainer, path: Path, data_hash: str) -> None:
        save_checkpoint(trainer, path, data_hash)
        raise SimulatedCrash

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(SimulatedCrash):
        train(volumes, labels, SITES, tiny_config, config, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    assert [line["step"] for line in read_log(tmp_path / "resumed")] == [2, 4]
    resumed = train(volumes, labels, SITES, tiny_config, config, tmp_path / "resumed", progress=False)

    assert read_log(resumed) == read_log(straight)
    final = [torch.load(d / "training" / CHECKPOINT_NAME, weights_only=True) for d in (straight, resumed)]
    for part in ("translator", "ema", "discriminator"):
        for name, value in final[0][part].items():
            assert torch.equal(value, final[1][part][name]), f"{part}.{name}"
    assert (straight / WEIGHTS_NAME).read_bytes() == (resumed / WEIGHTS_NAME).read_bytes()
    cards = [json.loads((d / CARD_NAME).read_text()) for d in (straight, resumed)]
    assert cards[0]["sites"] == cards[1]["sites"]


def test_changed_settings_or_data_start_afresh_and_say_why(tmp_path, toy_data, tiny_config, quick_train_config, caplog):
    volumes, labels = toy_data
    train(volumes, labels, SITES, tiny_config, quick_train_config, tmp_path / "run", progress=False)
    changed = TrainConfig.from_dict({**quick_train_config.to_dict(), "lr": 3e-4})
    afresh = train(volumes, labels, SITES, tiny_config, changed, tmp_path / "run", progress=False)
    assert "training setting lr: 0.0001 -> 0.0003" in caplog.text and "Starting training afresh" in caplog.text
    assert (afresh / "training" / "checkpoint.previous.pt").is_file()
    fresh = train(volumes, labels, SITES, tiny_config, changed, tmp_path / "fresh", progress=False)
    assert (afresh / WEIGHTS_NAME).read_bytes() == (fresh / WEIGHTS_NAME).read_bytes()

    caplog.clear()
    train(volumes[:-1], labels[:-1], SITES, tiny_config, changed, tmp_path / "run", progress=False)
    assert f"other training data ({len(volumes)} volumes then, {len(volumes) - 1} now)" in caplog.text


def test_an_unchanged_run_resumes_and_says_so(tmp_path, toy_data, tiny_config, quick_train_config, caplog):
    caplog.set_level(logging.INFO, logger="bids_harmonize")  # an INFO line: the CLI shows bids_harmonize at INFO
    volumes, labels = toy_data
    train(volumes, labels, SITES, tiny_config, quick_train_config, tmp_path, progress=False)
    train(volumes, labels, SITES, tiny_config, quick_train_config, tmp_path, progress=False)
    iterations = quick_train_config.iterations
    assert f"resuming training at step {iterations} of {iterations}" in caplog.text


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    factors = [lr_factor(step, iterations=10, decay_start=6) for step in (0, 5, 6, 8, 10)]
    assert factors == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_trainer_uses_the_documented_optimiser_settings(toy_data, tiny_config):
    stacked, _ = stack_volumes(toy_data[0])
    sampler = SliceSampler(
        stacked,
        toy_data[1],
        tiny_config,
        batch_size=2,
        site_balanced=True,
        min_foreground=0.05,
        content_noise_std=1.0,
        seed=0,
        device=torch.device("cpu"),
    )
    trainer = Trainer(
        tiny_config, TrainConfig(iterations=4, log_every=1, checkpoint_every=1), sampler, torch.device("cpu")
    )
    assert trainer.generator_optimizer.defaults["betas"] == (0.0, 0.99)
    assert trainer.learning_rates() == {"lr": 1e-4, "lr_mapping": 1e-6}
    mapping = {id(p) for p in trainer.translator.mapping.parameters()}
    assert {id(p) for p in trainer.generator_optimizer.param_groups[1]["params"]} == mapping
    for _ in range(3):
        terms = trainer.train_step()
    assert trainer.learning_rates()["lr"] == pytest.approx(0.5e-4)
    assert all(torch.isfinite(value) for value in terms.values())
    assert any(not torch.equal(e, p) for e, p in zip(trainer.ema.parameters(), trainer.translator.parameters()))


def test_train_config_round_trips_and_validates():
    config = TrainConfig(iterations=10, log_every=5, checkpoint_every=10)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="multiple of log_every"):
        TrainConfig(log_every=3, checkpoint_every=10)
    with pytest.raises(ValueError, match="decay_start"):
        TrainConfig(iterations=10, log_every=1, checkpoint_every=1, decay_start=11)


def test_site_arguments_are_checked(toy_data, tiny_config, quick_train_config, tmp_path):
    volumes, labels = toy_data
    with pytest.raises(ValueError, match="num_sites"):
        train(volumes, labels, ["a", "b", "c"], tiny_config, quick_train_config, tmp_path)
    with pytest.raises(ValueError, match="outside"):
        train(volumes, [0, 1, 2, 0, 1, 2], SITES, tiny_config, quick_train_config, tmp_path)


@pytest.mark.slow
def test_distributed_ranks_stay_in_step(tmp_path):
    """Two gloo processes under torchrun draw different batches but keep identical weights."""
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(worker),
        str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert not torch.equal(ranks[0]["first_images"], ranks[1]["first_images"])
    for part in ("translator", "discriminator"):
        for name, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][name]), f"{part}.{name} differs between ranks"
    assert load_bundle(tmp_path / "bundle").sites == ["A", "B"]
