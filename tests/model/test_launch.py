"""Training jobs: they round-trip through their file, run in place, and fail loudly under torchrun."""

from __future__ import annotations

import pytest
import torch

from bids_harmonize.model.bundle import WEIGHTS_NAME
from bids_harmonize.model.launch import TrainingFailed, TrainingJob, check_processes, launch


def make_job(tmp_path, tiny_config, quick_train_config, store) -> TrainingJob:
    return TrainingJob(
        store=str(store), rows=[0, 1, 2, 3, 4, 5], site_labels=[0, 1, 0, 1, 0, 1], site_names=["a", "b"],
        model_config=tiny_config.to_dict(), train_config=quick_train_config.to_dict(), out_dir=str(tmp_path / "out"),
        work_dir=str(tmp_path / "work"), device="cpu", threads=1, site_signatures={}, progress=False,
    )


def test_a_job_runs_in_place_from_its_file(tmp_path, toy_data, tiny_config, quick_train_config):
    from test_store import filled_store

    volumes, _ = toy_data
    filled_store(tmp_path / "store", volumes)
    job = make_job(tmp_path, tiny_config, quick_train_config, tmp_path / "store")
    path = job.write(tmp_path / "job.json")
    assert TrainingJob.read(path) == job
    assert (launch(path, processes=1) / WEIGHTS_NAME).is_file()


def test_a_failed_torchrun_is_an_error_with_the_retry_command(tmp_path, tiny_config, quick_train_config):
    path = make_job(tmp_path, tiny_config, quick_train_config, tmp_path / "no-store").write(tmp_path / "job.json")
    with pytest.raises(TrainingFailed, match="torch.distributed.run .* continues from the last checkpoint"):
        launch(path, processes=2)


def test_more_gpu_processes_than_gpus_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainingFailed, match="this machine has 1. Fix"):
        check_processes("cuda", 2)
    check_processes("cpu", 2)
