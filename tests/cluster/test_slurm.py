"""A real Slurm run (.ci/slurm.sh): a one-node cluster started on this machine, the array script
for 3 simulated participants, and a run with Nipype's SLURM plugin.

Opt-in with BIDS_HARMONIZE_SLURM_TEST=1: it installs packages and starts root daemons, which
`make test` must never do by itself, and takes minutes. Where Slurm cannot start (not root, no
packages, daemons refused), the script prints "SKIPPED: <reason>" and so does this test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("BIDS_HARMONIZE_SLURM_TEST") != "1",
        reason="starts a Slurm cluster as root: set BIDS_HARMONIZE_SLURM_TEST=1 to run",
    ),
]


def test_array_script_and_nipype_slurm_plugin_on_a_real_cluster():
    env = {**os.environ, "SLURM_CI_VENV": sys.prefix}  # the environment running these tests
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "slurm.sh")], env=env, capture_output=True, text=True, timeout=3600
    )
    output = done.stdout + done.stderr
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED: ")]
    if done.returncode == 0 and skipped:
        pytest.skip(skipped[0])
    assert done.returncode == 0, output[-6000:]
    assert "PASSED:" in output
