"""Signals stop every process of a run; stale temporaries are removed; a participant is locked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bids_harmonize.runtime import ParticipantLocked, participant_locks, remove_stale_temporaries
from bids_harmonize.utils import atomic_write_text

SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, os, time
    from concurrent.futures import ProcessPoolExecutor
    from bids_harmonize.runtime import install_signal_handlers

    def work(seconds):
        time.sleep(seconds)

    if __name__ == "__main__":
        install_signal_handlers()
        pool = ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver"))  # as Nipype's MultiProc
        futures = [pool.submit(work, 120) for _ in range(2)]
        for future in futures:  # as Nipype's MultiProc: a callback reads each result
            future.add_done_callback(lambda done: done.result())
        time.sleep(1.0)
        print(" ".join(str(p) for p in pool._processes), flush=True)
        time.sleep(120)
    """
)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not read its status yet


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGINT, True)])
def test_stopping_the_main_process_stops_every_worker(tmp_path, sig, group):
    """SIGINT to the whole process group is a terminal's Ctrl-C; a stop prints one line."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    main = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        workers = [int(p) for p in main.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
        os.killpg(main.pid, sig) if group else main.send_signal(sig)
        assert main.wait(timeout=20) == (-sig if sig == signal.SIGKILL else 128 + sig)
        if sig != signal.SIGKILL:
            lines = main.stderr.read().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"bids_harmonize: received {signal.Signals(sig).name}")
        deadline = time.monotonic() + 10
        while any(_running(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(p) for p in workers)
    finally:
        main.kill()
        main.wait()


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    host = socket.gethostname().split(".")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "sub-01/anat" / f".sub-01_desc-preproc_T1w.nii.gz.{host}-{dead.stdout.strip()}.abc123.tmp.nii.gz"
    live = tmp_path / "sub-01/anat" / f".sub-01_desc-preproc_T1w.json.{host}-{os.getpid()}.def456.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x1f\x8b truncated")
    live.write_text("{")
    kept = tmp_path / "sub-01/anat/sub-01_desc-preproc_T1w.json"
    atomic_write_text(kept, "{}")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and kept.read_text() == "{}"
    assert not [p for p in kept.parent.iterdir() if p.name.startswith(".sub-01_desc-preproc_T1w.json.") and p != live]


def test_a_participant_cannot_be_run_twice_at_once_into_one_output(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from bids_harmonize.runtime import "
            "participant_locks\nwith participant_locks(Path(sys.argv[1]), ['sub-01']):\n print('held', flush=True); "
            "time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ParticipantLocked, match=rf"sub-01 is being processed.*pid {holder.pid}.*--participant-label"
        ):
            with participant_locks(tmp_path, ["sub-02", "sub-01"]):
                pass
        with participant_locks(tmp_path, ["sub-02"]):  # other participants are free
            pass
        with pytest.raises(ParticipantLocked, match="the dataset is being processed"):
            with participant_locks(tmp_path, None):  # the group level needs every participant
                pass
    finally:
        holder.kill()
        holder.wait()
    with participant_locks(tmp_path, None):  # released with its holder
        with pytest.raises(ParticipantLocked, match="all participants are being processed"):
            with participant_locks(tmp_path, ["sub-01"]):
                pass
