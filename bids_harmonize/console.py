"""What reaches the console, and what goes to OUT/logs/ instead.

At default verbosity the console shows our own status lines (the ``bids_harmonize`` loggers
at INFO and up), warnings and errors, one progress line per image and stage (``Progress``:
what is done, what is left, the time since the workflow started) and the results (``result``).
Nipype's node chatter ("[Node] Setting-up ...", "[MultiProc] Running ...") goes to the run's
node log, OUT/logs/nipype-<run>.log, only; ``-v`` brings it back to the console and ``-vv``
adds debug lines. MultiProc workers are started by the forkserver and import Nipype afresh,
which would log every node at INFO to stdout: ``node_runner`` hands the same settings to each
worker through the process pool's initializer, so they apply where the workers start.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger("bids_harmonize")
NIPYPE_LOGGERS = ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip")
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
NODE_LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"


@dataclass(frozen=True)
class LogSettings:
    """How loud the console is (the count of -v) and where Nipype's node messages go."""

    verbosity: int = 0
    node_log: str | None = None  # OUT/logs/nipype-<run>.log; None: nowhere but the console


_settings = LogSettings()


def configure(settings: LogSettings) -> None:
    """Set up logging in this process (the main one, or a worker): our loggers on the console,
    Nipype's in the node log and, from -v on, on the console too."""
    global _settings
    _settings = settings
    level = logging.DEBUG if settings.verbosity > 1 else logging.INFO if settings.verbosity == 1 else logging.WARNING
    logging.basicConfig(format=CONSOLE_FORMAT, level=logging.WARNING, force=True)
    LOGGER.setLevel(min(level, logging.INFO))  # our own progress lines always show
    _configure_nipype(settings)


def _configure_nipype(settings: LogSettings) -> None:
    """Nipype's loggers keep to their own handlers (Nipype's would print to stdout): the node
    log gets everything at INFO (DEBUG from -vv), the console warnings and errors only, unless
    -v asks for more. Nipype resets these loggers' levels when it is imported; the handlers'
    levels are what holds."""
    detail = logging.DEBUG if settings.verbosity > 1 else logging.INFO
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(detail if settings.verbosity else logging.WARNING)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    console.addFilter(_without_traceback)
    handlers: list[logging.Handler] = [console]
    if settings.node_log:
        node_log = logging.FileHandler(settings.node_log, delay=True, encoding="utf-8")  # opened at the first line
        node_log.setLevel(detail)
        node_log.setFormatter(logging.Formatter(NODE_LOG_FORMAT))
        handlers.append(node_log)
    for name in NIPYPE_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "bids_harmonize", False)]:
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = False
        logger.setLevel(detail)
        for handler in handlers:
            handler.bids_harmonize = True  # type: ignore[attr-defined]  # ours, replaced on the next configure()
            logger.addHandler(handler)


def _without_traceback(record: logging.LogRecord) -> bool:
    """Nipype logs each crashed node with its traceback; the console gets the lines before it
    (node, crash file), the traceback stays in the crash file."""
    text = record.getMessage()
    if "Traceback (most recent call last)" in text:
        record.msg, record.args = text.split("Traceback (most recent call last)", 1)[0].rstrip(), ()
    return True


def result(text: str) -> None:
    """A result for the user (what was written, where): stdout, at every verbosity."""
    print(text, file=sys.stdout, flush=True)


def error(text: str) -> None:
    """A failure's message: stderr, at every verbosity."""
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- workflow runs
def node_runner(plugin: str, plugin_args: dict[str, Any]) -> Any:
    """What ``Workflow.run(plugin=...)`` gets: for MultiProc a plugin whose workers configure
    logging as this process did before they run a node; other plugins by name."""
    if plugin != "MultiProc":
        return plugin
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from nipype.pipeline.plugins.multiproc import MultiProcPlugin as NipypeMultiProc

    class MultiProcPlugin(NipypeMultiProc):  # Nipype names the plugin after the class: keep "MultiProc"
        def __init__(self, plugin_args: dict[str, Any]) -> None:
            super().__init__(plugin_args=plugin_args)
            self.pool.shutdown(wait=False)  # no worker started yet: replace the pool by one with our initializer
            self.pool = ProcessPoolExecutor(
                max_workers=self.processors,
                initializer=_start_worker,
                initargs=(self._cwd, _settings),
                mp_context=multiprocessing.get_context(self.plugin_args.get("mp_context")),
            )

    return MultiProcPlugin(plugin_args)


def _start_worker(cwd: str, settings: LogSettings) -> None:
    """In a MultiProc worker: Nipype's own initializer (importing Nipype), then our logging."""
    from nipype.pipeline.plugins.multiproc import process_initializer

    process_initializer(cwd)
    configure(settings)


class Progress:
    """Nipype's status callback: one line each time an image finishes a stage (preprocessing,
    harmonization, writing its outputs), with how many stages are done and left and the time
    since the workflow started. A stage is one top-level sub-workflow or node of the workflow."""

    STAGES = (
        ("preproc_reference_", "reference image preprocessed"),
        ("preproc_", "preprocessed"),
        ("harmonize_", "harmonized"),
        ("sink_", "outputs written"),
        ("volumes_preproc_", "tissue volumes of the preprocessed image measured"),
        ("volumes_harmonized_", "tissue volumes of the harmonized image measured"),
    )

    def __init__(self, workflow: Any) -> None:
        self.left = stage_sizes(workflow)  # nodes still to finish, per stage
        self.total, self.done, self.failed = len(self.left), 0, 0
        self.prefix = f"{workflow.name}."
        self.started = time.monotonic()

    def __call__(self, node: Any, status: str) -> None:
        if status not in ("end", "exception"):
            return
        stage = node.fullname.removeprefix(self.prefix).split(".")[0]
        if stage not in self.left or self.left[stage] <= 0:
            return
        if status == "exception":
            self.left[stage], self.failed = 0, self.failed + 1
            self._say(stage, f"FAILED at {node.name} (the crash file is in OUT/logs)")
            return
        self.left[stage] -= 1
        if self.left[stage] == 0:
            self.done += 1
            self._say(stage, None)

    def _say(self, stage: str, failure: str | None) -> None:
        prefix, what = next(((p, w) for p, w in self.STAGES if stage.startswith(p)), ("", "done"))
        left = self.total - self.done - self.failed
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.started))
        tally = f"{self.done} of {self.total} stages done" + (f", {self.failed} failed" if self.failed else "")
        LOGGER.info(
            "[%s] %s: %s (%s, %d left)", elapsed, image_label(stage[len(prefix) :]), failure or what, tally, left
        )


def stage_sizes(workflow: Any) -> Counter[str]:
    """Nodes per top-level stage of ``workflow``, in linear time (``Workflow.get_node`` searches,
    so looking each node up would be quadratic in a 10,000-image run). IdentityInterface nodes
    are left out: Nipype drops them before it runs the graph. Nipype has no public accessor for
    a workflow's own nodes; ``_graph`` and ``_get_all_nodes`` are what its own code uses."""
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline.engine import Workflow

    sizes: Counter[str] = Counter()
    for unit in workflow._graph.nodes():
        nodes = unit._get_all_nodes() if isinstance(unit, Workflow) else [unit]
        sizes[unit.name] = sum(not isinstance(node.interface, IdentityInterface) for node in nodes)
    return +sizes  # stages of identity nodes only never run: left out


def image_label(name: str) -> str:
    """The image's file stem back from its Nipype-safe name: sub_01_ses_1_T1w -> sub-01_ses-1_T1w
    (BIDS labels are alphanumeric, so the underscores alternate key, value, ..., suffix)."""
    parts = name.split("_")
    if len(parts) % 2 == 0 or not all(re.fullmatch(r"[A-Za-z0-9]+", p) for p in parts):
        return name
    return "_".join([*(f"{k}-{v}" for k, v in zip(parts[:-1:2], parts[1:-1:2])), parts[-1]])
