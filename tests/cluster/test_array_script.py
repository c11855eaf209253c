"""scripts/slurm/participant-array.sbatch without Slurm: the script run by bash with the
variables Slurm sets, and a stand-in launcher that records its command line. The real
scheduler run is tests/cluster/test_slurm.py (.ci/slurm.sh)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm" / "participant-array.sbatch"
DOC = ROOT / "docs" / "singularity.md"
RECORDER = """#!/bin/sh
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$RECORD"
"""


def fenced_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_docs_show_the_script_as_it_is():
    assert SCRIPT.read_text() in [block for block in fenced_blocks(DOC.read_text())]


def test_scripts_parse():
    for script in (SCRIPT, ROOT / ".ci" / "slurm.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT), str(ROOT / ".ci" / "slurm.sh")], check=True)


def test_array_size_and_gpu_are_left_to_submission():
    directives = [line for line in SCRIPT.read_text().splitlines() if line.startswith("#SBATCH")]
    assert not [d for d in directives if "--array" in d or "--gres" in d]
    assert "#SBATCH --cpus-per-task=8" in directives and "#SBATCH --mem=16G" in directives


@pytest.fixture
def task(tmp_path: Path):
    """Run the script as array task N; returns (exit code, stderr, recorded command lines)."""
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t40\nsub-03\t50\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("recorder", "singularity"):
        path = bindir / name
        path.write_text(RECORDER)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record.jsonl"

    def run(task_id: str | None, **env: str):
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "BIDS_HARMONIZE_"))}
        environ.update(
            PATH=f"{bindir}:{environ['PATH']}",
            RECORD=str(record),
            TMPDIR=str(tmp_path / "scratch"),
            SLURM_JOB_ID="80",
            SLURM_ARRAY_JOB_ID="77",
            SLURM_CPUS_PER_TASK="4",
            BIDS_HARMONIZE_BIDS=str(bids),
            BIDS_HARMONIZE_OUT=str(tmp_path / "out"),
            **env,
        )
        if task_id is not None:
            environ["SLURM_ARRAY_TASK_ID"] = task_id
        (tmp_path / "scratch").mkdir(exist_ok=True)
        done = subprocess.run(["bash", str(SCRIPT)], env=environ, capture_output=True, text=True)
        lines = record.read_text().splitlines() if record.exists() else []
        record.unlink(missing_ok=True)
        return done.returncode, done.stderr, [json.loads(line) for line in lines]

    run.bids, run.out, run.scratch, run.bindir = bids, tmp_path / "out", tmp_path / "scratch", bindir
    return run


def test_task_runs_its_participant_with_the_jobs_resources(task):
    code, err, calls = task(
        "2",
        BIDS_HARMONIZE_CMD=f"{task.bindir}/recorder --flag",
        BIDS_HARMONIZE_ARGS="--template-resolution 2",
        SLURM_MEM_PER_NODE="3072",
    )
    assert code == 0, err
    work = str(task.scratch / "bh_77_2")
    assert calls == [
        [
            "--flag",
            str(task.bids),
            str(task.out),
            "participant",
            "--participant-label",
            "02",
            "-w",
            work,
            "--nprocs",
            "4",
            "--template-resolution",
            "2",
            "--mem",
            "3072M",
        ]
    ]
    assert task.out.is_dir() and not Path(work).exists()  # the task's scratch is removed


def test_default_launcher_binds_every_folder_at_its_own_path(task):
    code, err, calls = task("3", BIDS_HARMONIZE_SIF="/images/bh.sif")
    assert code == 0, err
    bids, out, work = str(task.bids), str(task.out), str(task.scratch / "bh_77_3")
    assert calls == [
        [
            "run",
            "--nv",
            "--cleanenv",
            "-B",
            f"{bids}:{bids}:ro",
            "-B",
            f"{out}:{out}",
            "-B",
            f"{work}:{work}",
            "/images/bh.sif",
            bids,
            out,
            "participant",
            "--participant-label",
            "03",
            "-w",
            work,
            "--nprocs",
            "4",
        ]
    ]


@pytest.mark.parametrize(("task_id", "message"), [(None, "not an array task"), ("4", "fewer rows")])
def test_a_task_without_a_participant_stops_before_running(task, task_id, message):
    code, err, calls = task(task_id, BIDS_HARMONIZE_CMD=f"{task.bindir}/recorder")
    assert code == 2 and message in err and calls == []
