"""A training job as a file, run in this process or by N DistributedDataParallel processes.

The group level writes everything training needs into one JSON file (the store's rows and
their sites, the model and training settings, the input contract the bundle's card records,
where to write) and hands it here. With one
process the job runs in place; with N, torchrun starts N copies of this module, each opens the
store itself (nothing is pickled across processes), and rank 0 writes the bundle:

    python -m torch.distributed.run --standalone --nproc_per_node=N -m bids_harmonize.model.launch JOB.json
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from bids_harmonize.errors import ExitCode, HarmonizeError
from bids_harmonize.model.card import InputContract
from bids_harmonize.model.networks import MURDConfig
from bids_harmonize.model.store import StoredVolumes, VolumeStore
from bids_harmonize.model.train import train
from bids_harmonize.model.train_config import TrainConfig
from bids_harmonize.utils import atomic_write_json


class TrainingFailed(HarmonizeError, RuntimeError):
    """The training processes did not finish; their messages are above this one."""

    exit_code = ExitCode.FAILURE


@dataclass(frozen=True)
class TrainingJob:
    store: str
    rows: list[int]
    site_labels: list[int]
    site_names: list[str]
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    out_dir: str
    work_dir: str
    device: str
    threads: int  # torch threads of each process
    site_signatures: dict[str, dict[str, Any]]
    progress: bool = True
    input_contract: dict[str, Any] | None = None  # InputContract.to_dict(): written into the bundle's card
    brain_mask: str | None = None  # NIfTI on the volumes' grid (the template mask): for the curve anchors
    # column -> one value per row (None: missing): the anchors' covariates (train(anchor_covariates=))
    anchor_covariates: dict[str, list[float | None]] | None = None

    def write(self, path: Path) -> Path:
        return atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> TrainingJob:
        return cls(**json.loads(Path(path).read_text()))


def run_job(job: TrainingJob) -> Path:
    """Train as the job says (every torchrun process calls this); returns the bundle folder."""
    torch.set_num_threads(job.threads)
    store = VolumeStore.open_existing(Path(job.store))
    return train(
        StoredVolumes(store, job.rows),
        job.site_labels,
        job.site_names,
        MURDConfig.from_dict(job.model_config),
        TrainConfig.from_dict(job.train_config),
        job.out_dir,
        device=job.device,
        work_dir=job.work_dir,
        site_signatures=job.site_signatures,
        progress=job.progress,
        input_contract=InputContract.from_dict(job.input_contract) if job.input_contract is not None else None,
        brain_mask=None if job.brain_mask is None else np.asarray(nib.load(job.brain_mask).dataobj) > 0,
        anchor_covariates=job.anchor_covariates,
    )


def check_processes(device: str, processes: int) -> None:
    """Refuse more GPU processes than GPUs (before any work, where the caller can)."""
    if device.startswith("cuda") and processes > torch.cuda.device_count():
        raise TrainingFailed(
            f"{processes} training processes need as many GPUs; this machine has {torch.cuda.device_count()}. "
            "Fix: --train-processes at most the GPU count (or --device cpu for gloo processes on the CPU)."
        )


def launch(job_path: Path, processes: int) -> Path:
    """Run the job in `job_path` with `processes` training processes (torchrun when > 1)."""
    job = TrainingJob.read(job_path)
    check_processes(job.device, processes)
    if processes == 1:
        return run_job(job)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        __name__,
        str(job_path),
    ]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise TrainingFailed(
            f"{processes} training processes under torchrun exited with status {result.returncode} (messages above). "
            f"To retry: {' '.join(command)}; the same command continues from the last checkpoint."
        )
    return Path(job.out_dir)


if __name__ == "__main__":
    run_job(TrainingJob.read(Path(sys.argv[1])))
