"""Training jobs: they round-trip through their file, run in place, and fail loudly under torchrun."""

from __future__ import annotations

import pytest
import torch

from bids_harmonize.model.bundle import WEIGHTS_NAME
from bids_harmonize.model.card import InputContract, read_card
from bids_harmonize.model.launch import TrainingFailed, TrainingJob, check_processes, launch
from bids_harmonize.preproc.operations import intensity_convention


def make_job(tmp_path, tiny_config, quick_train_config, store, contract=None) -> TrainingJob:
    return TrainingJob(
        store=str(store),
        rows=[0, 1, 2, 3, 4, 5],
        site_labels=[0, 1, 0, 1, 0, 1],
        site_names=["a", "b"],
        model_config=tiny_config.to_dict(),
        train_config=quick_train_config.to_dict(),
        out_dir=str(tmp_path / "out"),
        work_dir=str(tmp_path / "work"),
        device="cpu",
        threads=1,
        site_signatures={},
        progress=False,
        input_contract=contract.to_dict() if contract else None,
    )


def test_a_job_runs_in_place_from_its_file_and_its_bundle_carries_the_contract(
    tmp_path, toy_data, tiny_config, quick_train_config
):
    from test_store import filled_store

    volumes, _ = toy_data
    filled_store(tmp_path / "store", volumes)
    contract = InputContract(
        "T1w", "MNI152NLin2009cSym", 2, (28, 30, 20), tiny_config.image_size, 2, intensity_convention()
    )
    job = make_job(tmp_path, tiny_config, quick_train_config, tmp_path / "store", contract)
    path = job.write(tmp_path / "job.json")
    assert TrainingJob.read(path) == job
    bundle_dir = launch(path, processes=1)
    assert (bundle_dir / WEIGHTS_NAME).is_file()
    assert read_card(bundle_dir).input_contract == contract  # written once, by save_bundle


def test_a_failed_torchrun_is_an_error_with_the_retry_command(tmp_path, tiny_config, quick_train_config):
    path = make_job(tmp_path, tiny_config, quick_train_config, tmp_path / "no-store").write(tmp_path / "job.json")
    with pytest.raises(TrainingFailed, match="torch.distributed.run .* continues from the last checkpoint"):
        launch(path, processes=2)


def test_more_gpu_processes_than_gpus_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainingFailed, match="this machine has 1. Fix"):
        check_processes("cuda", 2)
    check_processes("cpu", 2)
