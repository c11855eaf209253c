"""Group training through the CLI: a run stopped by SIGTERM continues from its last checkpoint
and ends with the same bundle as an uninterrupted run; the volume store is filled once and
reused; `--train-processes 2` trains under torchrun with gloo on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bids_harmonize.cli.run import main
from bids_harmonize.model.bundle import WEIGHTS_NAME
from bids_harmonize.model.checkpoint import CHECKPOINT_NAME
from bids_harmonize.model.store import INDEX_NAME

pytestmark = pytest.mark.slow
ITERATIONS = 40  # checkpoints every 10 steps (the group level keeps ~10 per run)
COMMON = [
    "--template-resolution",
    "2",
    "--contrasts",
    "T1w",
    "--nprocs",
    "1",
    "--omp-nthreads",
    "1",
    "--iterations",
    str(ITERATIONS),
    "--batch-size",
    "2",
]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    from bids_harmonize.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("group")
    dataset = simulate_dataset(root / "bids", n_sites=2, n_subjects=4, resolution_mm=2.0, seed=4)
    out = root / "out"
    assert main([str(dataset.bids_root), str(out), "participant", *COMMON[:8], "-w", str(root / "prep")]) == 0
    return dataset.bids_root, out, root


def group_command(bids: Path, out: Path, work: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bids_harmonize.cli.run",
        str(bids),
        str(out),
        "group",
        *COMMON,
        "-w",
        str(work),
        *extra,
    ]


def logged_steps(work: Path) -> list[int]:
    log = work / "training" / "T1w" / "train_log.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.is_file() else []


def weights(out: Path) -> bytes:
    return (out / "models" / "T1w" / WEIGHTS_NAME).read_bytes()


def test_an_interrupted_group_run_resumes_to_the_same_bundle(preprocessed):
    bids, out, root = preprocessed
    env = {**os.environ, "NIPYPE_NO_ET": "1"}
    straight = subprocess.run(group_command(bids, out, root / "straight"), env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    uninterrupted = weights(out)

    work = root / "interrupted"
    run = subprocess.Popen(
        group_command(bids, out, work), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    while max(logged_steps(work), default=0) < 20 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    # The signal may land between a log line and its checkpoint: resume is from the checkpoint.
    checkpoint = torch.load(work / "training" / "T1w" / CHECKPOINT_NAME, weights_only=True)
    stopped_at = checkpoint["step"]
    assert 10 <= stopped_at < ITERATIONS

    resumed = subprocess.run(group_command(bids, out, work), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming training at step {stopped_at} of {ITERATIONS}" in resumed.stderr
    assert "volume store" in resumed.stderr and "(0 added now" in resumed.stderr
    assert weights(out) == uninterrupted

    changed = subprocess.run(group_command(bids, out, work, "--seed", "1"), env=env, capture_output=True, text=True)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "training setting seed: 0 -> 1" in changed.stderr and "Starting training afresh" in changed.stderr


def test_group_training_under_torchrun_with_two_gloo_processes(preprocessed, capsys):
    bids, out, root = preprocessed
    work = root / "ddp"
    group = [str(bids), str(out), "group", *COMMON, "-w", str(work), "--train-processes", "2"]
    assert main(group) == 0
    assert logged_steps(work)[-1] == ITERATIONS
    job = json.loads((work / "training" / "T1w" / "job.json").read_text())
    assert len(job["rows"]) == 4 and job["threads"] == 1
    assert (out / "models" / "T1w" / WEIGHTS_NAME).is_file()

    # Harmonizing rewrites the template-space outputs; the next group run stores nothing again.
    assert main([str(bids), str(out), "participant", *COMMON[:8], "-w", str(root / "prep")]) == 0
    capsys.readouterr()
    assert main(group) == 0
    assert "holds 4 volumes (0 added now" in capsys.readouterr().err
    rows = (work / "training" / "T1w" / "store" / INDEX_NAME).read_text().splitlines()
    assert len({json.loads(line)["row"] for line in rows}) == 4
    assert len(rows) == 8  # each rewritten file took a new stamp (one more index line each)
