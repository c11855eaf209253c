"""Validation-based snapshot selection (model/validation.py): which volumes are held out, that the
gradient steps never see them, that the bundle keeps the best-scoring EMA weights, and that an
interrupted run resumes onto the same choice."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from bids_harmonize.model import train
from bids_harmonize.model.bundle import CARD_NAME, load_bundle
from bids_harmonize.model.data import SliceSampler, stack_volumes
from bids_harmonize.model.train import Trainer
from bids_harmonize.model.training_log import LOG_NAME
from bids_harmonize.model.validation import MIN_TRAINING_VOLUMES, validation_split
from toy_data import two_site_volumes

SITES = ["siteA", "siteB"]


@pytest.fixture(scope="module")
def five_per_site() -> tuple[list, list[int]]:
    return two_site_volumes(per_site=5, seed=1)


@pytest.fixture(scope="module")
def validated_config(anchored_train_config):
    return dataclasses.replace(
        anchored_train_config, iterations=6, validation_per_site=1, validate_every=2, checkpoint_every=2
    )


def test_split_takes_evenly_spread_volumes_from_sites_that_keep_enough():
    labels = [0] * 12 + [1] * 12 + [2] * MIN_TRAINING_VOLUMES
    split = validation_split(labels, per_site=2)
    assert split.held_out == (3, 9, 15, 21) and split.reason == ""
    assert validation_split(labels, per_site=2) == split  # no seed: every seed validates on the same volumes


def test_split_is_off_with_a_warning_when_fewer_than_two_sites_can_spare_volumes(caplog):
    split = validation_split([0] * 6 + [1] * 3, per_site=2)
    assert split.held_out == () and "site indices [1]" in split.reason
    assert "MURD validation is off" in caplog.text
    assert validation_split([0] * 6 + [1] * 6, per_site=0).held_out == ()


def test_held_out_volumes_are_never_drawn_but_still_count_for_site_statistics(five_per_site, tiny_config):
    stacked, _ = stack_volumes(five_per_site[0])
    labels = five_per_site[1]
    options = dict(batch_size=4, site_balanced=True, min_foreground=0.05, content_noise_std=1.0, seed=0)
    sampler = SliceSampler(stacked, labels, tiny_config, device=torch.device("cpu"), **options)
    held_out = validation_split(labels, per_site=1).held_out
    sampler.hold_out(held_out)
    drawn, stacks = set(), sampler.stacks

    def recording_stacks(volume_index, centre):  # sources and references both pass through here
        drawn.update(volume_index.tolist())
        return stacks(volume_index, centre)

    sampler.stacks = recording_stacks
    for _ in range(200):
        sampler.sample()
    assert drawn == set(range(len(labels))) - set(held_out)
    assert set(held_out) <= set(sampler.site_positions(0)[0].tolist()) | set(sampler.site_positions(1)[0].tolist())
    with pytest.raises(ValueError, match="nothing to train on"):
        sampler.hold_out([v for v in range(len(labels)) if labels[v] == 0])


def test_the_bundle_keeps_the_best_scoring_snapshot(tmp_path, five_per_site, tiny_config, validated_config):
    volumes, labels = five_per_site
    snapshots = {}

    def keep_ema(trainer: Trainer) -> None:
        snapshots[trainer.step] = {k: v.clone() for k, v in trainer.ema.content_encoder.state_dict().items()}

    bundle_dir = train(
        volumes, labels, SITES, tiny_config, validated_config, tmp_path, on_step=keep_ema, progress=False
    )
    record = json.loads((bundle_dir / CARD_NAME).read_text())["training"]["validation"]
    steps = [step for step, _ in record["scores"]]
    assert steps == [0, 2, 4, 6] and record["held_out_volumes"] == 2 and record["every"] == 2
    best_step, best_score = min(record["scores"], key=lambda entry: entry[1])
    assert record["selected_step"] == best_step
    log = [json.loads(line) for line in (tmp_path / "training" / LOG_NAME).read_text().splitlines()]
    assert [line["step"] for line in log if "val_score" in line] == steps
    assert all(set(line) >= {"val_histogram", "val_cycle", "val_seconds"} for line in log if "val_score" in line)
    kept = load_bundle(bundle_dir).translator.content_encoder.state_dict()
    if best_step > 0:  # the content encoder is not touched by the curve calibration
        assert all(torch.equal(kept[k], snapshots[best_step][k]) for k in kept)
    for step in (s for s in steps if s > 0 and s != best_step):
        assert not all(torch.equal(kept[k], snapshots[step][k]) for k in kept)


def test_an_interrupted_validated_run_resumes_onto_the_same_choice(
    tmp_path, five_per_site, tiny_config, validated_config, monkeypatch
):
    volumes, labels = five_per_site
    straight = train(volumes, labels, SITES, tiny_config, validated_config, tmp_path / "straight", progress=False)
    save_checkpoint, calls = Trainer.save_checkpoint, []

    def crash_at_second(trainer, path, data_hash) -> None:
        save_checkpoint(trainer, path, data_hash)
        calls.append(trainer.step)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", crash_at_second)
    with pytest.raises(KeyboardInterrupt):
        train(volumes, labels, SITES, tiny_config, validated_config, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    resumed = train(volumes, labels, SITES, tiny_config, validated_config, tmp_path / "resumed", progress=False)
    cards = [json.loads((d / CARD_NAME).read_text())["training"]["validation"] for d in (straight, resumed)]
    assert cards[0] == cards[1]
    assert (straight / "model.safetensors").read_bytes() == (resumed / "model.safetensors").read_bytes()


def test_too_few_volumes_train_unvalidated_and_the_card_says_why(
    tmp_path, toy_data, tiny_config, validated_config, caplog
):
    caplog.set_level(logging.WARNING, logger="bids_harmonize")
    volumes, labels = toy_data  # 3 per site: none to spare
    bundle_dir = train(volumes, labels, SITES, tiny_config, validated_config, tmp_path, progress=False)
    record = json.loads((bundle_dir / CARD_NAME).read_text())["training"]["validation"]
    assert "fewer than two sites" in record["off"]
    assert "MURD validation is off" in caplog.text
