"""Running under a scheduler plugin of Nipype (SLURM, SGE, PBS, ...).

The jobs Nipype's SLURM plugin submits for one run are tagged with the run's id, so that a run
that is stopped can cancel them (otherwise they would go on computing for nobody, and could
race the next run's jobs in the same work dir)."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from typing import Any

COMMENT_PREFIX = "bids_harmonize:"
COMMAND_TIMEOUT_S = 20


def set_environment(plugin: str) -> None:
    """Nipype's scheduler plugins (SLURM, SGE, PBS, ...) name jobs after $LOGNAME and fail with
    KeyError where it is unset (containers, cron, CI runners)."""
    if plugin not in ("MultiProc", "Linear") and "LOGNAME" not in os.environ:
        try:
            os.environ["LOGNAME"] = getpass.getuser()
        except (KeyError, OSError):  # a uid without a passwd entry
            os.environ["LOGNAME"] = str(os.getuid())


def job_cpus(plugin_args: dict[str, Any]) -> int:
    """The CPUs each submitted job asks for: `-c`/`--cpus-per-task` in sbatch_args, else 1."""
    cpus = re.search(r"(?:--cpus-per-task[= ]|-c\s*)(\d+)", str(plugin_args.get("sbatch_args", "")))
    return int(cpus[1]) if cpus else 1


def tag_slurm_jobs(plugin_args: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The plugin arguments with this run's tag added to every job's sbatch arguments."""
    sbatch_args = f"{plugin_args.get('sbatch_args', '')} --comment={COMMENT_PREFIX}{run_id}".strip()
    return {**plugin_args, "sbatch_args": sbatch_args}


def cancel_slurm_jobs(run_id: str) -> list[str]:
    """Cancel this user's queued or running jobs tagged with `run_id`; returns their ids."""
    listing = subprocess.run(
        ["squeue", "--noheader", f"--user={os.getuid()}", "--format=%i %k"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=True,
    )
    tag = f"{COMMENT_PREFIX}{run_id}"
    ids = [
        fields[0] for fields in (line.split(maxsplit=1) for line in listing.stdout.splitlines()) if fields[1:] == [tag]
    ]
    if ids:
        subprocess.run(["scancel", *ids], timeout=COMMAND_TIMEOUT_S, check=True)
        print(f"bids_harmonize: cancelled {len(ids)} Slurm job(s) of this run: {' '.join(ids)}", file=sys.stderr)
    return ids
