"""What keeps a run from leaving processes, half-written files or a raced work dir behind.

- Signals: SIGTERM/SIGINT/SIGHUP (what SLURM, Docker and a terminal send) stop every process
  this run started (the multiprocessing forkserver and Nipype's workers) before it exits, after
  the registered stop actions (e.g. cancelling the Slurm jobs a scheduler plugin submitted).
  For SIGKILL, which no process can catch, each worker watches the main process and ends
  itself when it is gone; the forkserver then exits on its own.
- Temporary files: every atomic write names its temporary after host and pid
  (see utils.atomic_write); a run removes those of writers that no longer exist.
- Locks: one ``flock`` per participant under OUT/.locks, held for the whole run, so two runs
  of one participant into one output folder are refused rather than raced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from bids_harmonize.errors import ExitCode, HarmonizeError

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp")
_FOREIGN_TEMPORARY_AGE_S = 24 * 3600


class ParticipantLocked(HarmonizeError, RuntimeError):
    """Another run is processing the same participant into the same output folder."""

    exit_code = ExitCode.FAILURE


# ----------------------------------------------------------------------------- processes
def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of ``pid`` (default: this process), from /proc (Linux)."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop_descendants(grace_s: float = 5.0) -> None:
    """SIGTERM every descendant, then SIGKILL those still there after ``grace_s``."""
    pids = descendants()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.1)


_STOP_ACTIONS: list[Callable[[], None]] = []


@contextlib.contextmanager
def stop_action(action: Callable[[], None]) -> Iterator[None]:
    """Run `action` if a stop signal arrives while the block runs (e.g. cancel submitted jobs)."""
    _STOP_ACTIONS.append(action)
    try:
        yield
    finally:
        _STOP_ACTIONS.remove(action)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # one clean stop, however many signals arrive
    print(
        f"bids_harmonize: received {signal.Signals(signum).name}; stopping all worker processes, exit code "
        f"{128 + signum}",
        file=sys.stderr,
        flush=True,
    )
    for action in list(_STOP_ACTIONS):
        try:
            action()
        except Exception as err:  # a failed clean-up must not keep the run from stopping
            print(f"bids_harmonize: while stopping: {err}", file=sys.stderr, flush=True)
    _silence()
    stop_descendants()
    # Exit here rather than raise SystemExit: Nipype runs local nodes under a bare `except:` and
    # would swallow it and go on scheduling nodes. A temporary file this leaves is removed by the
    # next run (remove_stale_temporaries).
    os._exit(128 + signum)


def _silence() -> None:
    """After the stop line, nothing more reaches the console: killing the workers breaks the
    process pool, and its threads would log BrokenProcessPool tracebacks on their way out."""
    import logging

    logging.disable(logging.CRITICAL)
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)


def install_signal_handlers() -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    # Workers are forked by the forkserver; this module, preloaded there, arms each of them.
    import multiprocessing

    multiprocessing.set_forkserver_preload([__name__])


def _exit_when_gone(pid: int) -> None:
    """Block until process ``pid`` has exited, then end this process at once."""
    try:
        handle = os.pidfd_open(pid)  # Linux >= 5.3: readable when the process exits
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:
        while _alive(pid):
            time.sleep(2.0)
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_worker(_: object) -> None:
    """In a worker: a daemon thread that ends the worker when the run's main process is gone.
    (The forkserver keeps running as long as any worker holds its liveness pipe, and the
    kernel's parent-death signal would refer to the forkserver, so neither can be relied on.)"""
    import multiprocessing
    import threading

    # A terminal's Ctrl-C reaches every process of the group; the main process stops the run,
    # so a worker ignores SIGINT rather than print a KeyboardInterrupt traceback.
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid:
        threading.Thread(target=_exit_when_gone, args=(parent.pid,), daemon=True, name="orphan-watch").start()


def _register_after_fork() -> None:
    """Arm every process multiprocessing starts from a process that imported this module: the
    forkserver (which preloads it) and so each Nipype worker it forks."""
    import multiprocessing.util

    multiprocessing.util.register_after_fork(_arm_worker, _arm_worker)


_register_after_fork()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- temporary files
def remove_stale_temporaries(folder: Path, skip: Path | None = None) -> list[Path]:
    """Remove temporaries of atomic writes whose writer is gone (this host: pid not alive;
    another host: older than a day). Returns what was removed."""
    host, removed = socket.gethostname().split(".")[0], []
    for root, dirs, files in os.walk(folder):
        if skip is not None and Path(root) == skip.parent:
            dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for name in files:
            match = _TEMPORARY.match(name)
            if not match:
                continue
            path = Path(root, name)
            same_host = match["host"] == host
            with contextlib.suppress(FileNotFoundError):
                stale = (
                    not _alive(int(match["pid"]))
                    if same_host
                    else time.time() - path.stat().st_mtime > _FOREIGN_TEMPORARY_AGE_S
                )
                if stale:
                    path.unlink()
                    removed.append(path)
    return removed


# ----------------------------------------------------------------------------- locks
def _lock(stack: contextlib.ExitStack, path: Path, exclusive: bool, what: str, out_dir: Path) -> None:
    handle = stack.enter_context(open(path, "a+"))
    try:
        fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        handle.seek(0)
        holders = ", ".join(sorted(set(handle.read().split("\n")) - {""})) or "another process"
        raise ParticipantLocked(
            f"{what} being processed into {out_dir} by another bids_harmonize run ({holders}; lock {path}). "
            "Fix: wait for that run to finish, or give parallel runs different --participant-label values "
            "(the group level, and a participant run without labels, need all participants to themselves)."
        ) from None
    if exclusive:
        handle.seek(0)
        handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()


@contextlib.contextmanager
def participant_locks(folder: Path, labels: list[str] | None) -> Iterator[None]:
    """Hold the locks of a run for its whole duration, in ``folder`` (OUT/.locks, which
    bids.outputs.OutputLayout names; the messages call its parent the output folder): ``labels``
    None (the group level, or a participant run of the whole dataset) locks every participant
    at once (``all.lock``, exclusive); a list locks ``all.lock`` shared plus each listed
    participant exclusively. One file per listed participant, never one per participant of a
    10,000-session dataset."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        _lock(
            stack,
            folder / "all.lock",
            labels is None,
            "the dataset is" if labels is None else "all participants are",
            folder.parent,
        )
        for label in sorted(set(labels or [])):
            _lock(stack, folder / f"{label}.lock", True, f"{label} is", folder.parent)
        yield
