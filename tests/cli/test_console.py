"""A quiet console: Nipype's node chatter goes to OUT/logs/nipype-<run>.log, in the main process
and in the MultiProc workers the forkserver starts; -v brings it back; the console gets one
progress line per image and stage, and the results."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections import Counter

import pytest

from bids_harmonize import console
from bids_harmonize.console import LogSettings
from helpers import Scan, make_bids

CHATTER = '[Node] Setting-up "wf.preproc_sub_01_T1w.n4"'
PROGRESS = re.compile(
    r"^INFO bids_harmonize: \[\d\d:\d\d:\d\d\] (sub-\d\d_T1w): "
    r"(preprocessed|outputs written|tissue volumes of the preprocessed image measured) "
    r"\((\d+) of (\d+) stages done, (\d+) left\)$"
)


@pytest.fixture(autouse=True)
def default_logging():
    yield
    console.configure(LogSettings())  # no later test writes into this test's node log


@pytest.mark.parametrize("verbosity", [0, 1])
def test_node_chatter_goes_to_the_node_log_and_to_the_console_only_with_v(tmp_path, capsys, verbosity):
    log = tmp_path / "nipype.log"
    console.configure(LogSettings(verbosity, str(log)))
    logging.getLogger("nipype.workflow").info(CHATTER)
    logging.getLogger("nipype.workflow").warning("a node failed: crash file X")
    logging.getLogger("bids_harmonize").info("found 2 image(s)")
    err = capsys.readouterr().err
    assert (CHATTER in err) == bool(verbosity)
    assert "WARNING nipype.workflow: a node failed: crash file X" in err
    assert "INFO bids_harmonize: found 2 image(s)" in err
    assert CHATTER in log.read_text() and "a node failed" in log.read_text()


def test_workers_started_by_the_forkserver_log_as_the_main_process_does(tmp_path, capfd):
    log = tmp_path / "nipype.log"
    console.configure(LogSettings(0, str(log)))
    runner = console.node_runner("MultiProc", {"n_procs": 1, "mp_context": "forkserver", "raise_insufficient": False})
    try:  # Logger methods pickle by the logger's name: the call runs in the worker
        runner.pool.submit(logging.getLogger("nipype.workflow").info, CHATTER).result(timeout=120)
    finally:
        runner.pool.shutdown()
    assert CHATTER not in "".join(capfd.readouterr())  # neither stdout nor stderr, at the file descriptors
    assert CHATTER in log.read_text()


def test_other_plugins_are_passed_by_name():
    assert console.node_runner("Linear", {}) == "Linear"


def test_progress_says_one_line_per_image_and_stage(caplog):
    from nipype.interfaces.utility import Function, IdentityInterface
    from nipype.pipeline import engine as pe

    def step(x):
        return x

    workflow = pe.Workflow(name="bids_harmonize_wf")
    for subject in ("01", "02"):
        preproc = pe.Workflow(name=f"preproc_sub_{subject}_T1w")
        inputnode = pe.Node(IdentityInterface(fields=["x"]), name="inputnode")  # Nipype drops it: no stage of its own
        first = pe.Node(Function(["x"], ["x"], step), name="n4")
        second = pe.Node(Function(["x"], ["x"], step), name="register")
        preproc.connect([(inputnode, first, [("x", "x")]), (first, second, [("x", "x")])])
        sink = pe.Node(Function(["x"], ["x"], step), name=f"sink_sub_{subject}_T1w")
        workflow.connect(preproc, "register.x", sink, "x")
        preproc.inputs.inputnode.x = 1
    caplog.set_level(logging.INFO, logger="bids_harmonize")
    progress = console.Progress(workflow)
    for node in ("preproc_sub_01_T1w.n4", "preproc_sub_01_T1w.register", "sink_sub_01_T1w", "preproc_sub_02_T1w.n4"):
        target = workflow.get_node(node)
        progress(target, "start")
        progress(target, "end")
    progress(workflow.get_node("preproc_sub_02_T1w.register"), "exception")
    lines = [r.getMessage() for r in caplog.records]
    assert [re.sub(r"^\[[\d:]+\] ", "", line) for line in lines] == [
        "sub-01_T1w: preprocessed (1 of 4 stages done, 3 left)",
        "sub-01_T1w: outputs written (2 of 4 stages done, 2 left)",
        "sub-02_T1w: FAILED at register (the crash file is in OUT/logs) (2 of 4 stages done, 1 failed, 1 left)",
    ]


def test_stage_sizes_count_the_nodes_nipype_runs(tmp_path):
    """Against the graph Nipype runs (flattened, identity nodes dropped) of a real participant
    workflow: preprocessing and harmonization of one image, preprocessing only of another."""
    from bids_harmonize.bids.records import ImageRecord
    from bids_harmonize.sites.assign import SiteAssignment
    from bids_harmonize.sites.signature import ProtocolSignature, ScannerSignature
    from bids_harmonize.workflows.participant import HarmonizationPlan, TemplateFiles, init_participant_wf

    for name in ("template.nii.gz", "mask.nii.gz"):
        (tmp_path / name).touch()
    (tmp_path / "bundle").mkdir()
    scanner = ScannerSignature(vendor=None, model=None, field_t=None, unit=None, unit_key=None, software=None)
    assignments = []
    for subject, site in (("01", "A"), ("02", "C")):  # site C: not in the bundle, preprocessed only
        relpath = f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"
        (tmp_path / relpath).parent.mkdir(parents=True)
        (tmp_path / relpath).touch()
        image = ImageRecord(tmp_path / relpath, relpath, subject, None, "T1w")
        assignments.append(SiteAssignment(image, site, "inferred", "fake", scanner, ProtocolSignature()))
    plan = HarmonizationPlan(
        bundle_dir=str(tmp_path / "bundle"),
        bundle_sha256="w",
        bundle_sites=("A", "B"),
        target_site="A",
        target_scale=(0.0, 1.0),
        style="site",
        seed=0,
    )
    template = TemplateFiles(
        "MNI152NLin2009cSym", 2, {"T1w": str(tmp_path / "template.nii.gz")}, str(tmp_path / "mask.nii.gz")
    )
    workflow, _ = init_participant_wf(
        assignments=assignments, out_dir=tmp_path / "out", template=template, plans={"T1w": plan}, provenance={}
    )
    from nipype.pipeline.engine.utils import generate_expanded_graph

    ran = Counter(
        node.fullname.split(".")[1] for node in generate_expanded_graph(workflow._create_flat_graph()).nodes()
    )
    assert console.stage_sizes(workflow) == ran
    assert set(ran) == {
        "preproc_sub_01_T1w",
        "harmonize_sub_01_T1w",
        "sink_sub_01_T1w",
        "preproc_sub_02_T1w",
        "sink_sub_02_T1w",
        "volumes_preproc_sub_01_T1w",
        "volumes_harmonized_sub_01_T1w",
        "volumes_preproc_sub_02_T1w",
    }


def test_image_labels_come_back_from_node_names():
    assert console.image_label("sub_01_ses_1_T1w") == "sub-01_ses-1_T1w"
    assert console.image_label("sub_01_T1w") == "sub-01_T1w"
    assert console.image_label("T1w") == "T1w"
    assert console.image_label("odd_name") == "odd_name"


@pytest.mark.slow
def test_a_participant_run_keeps_to_the_promised_console(tmp_path):
    """The whole CLI in its own process (MultiProc with forkserver workers, as users run it)."""
    scans = [Scan("01", "siemens_a", voxel=(4.0, 4.0, 4.0)), Scan("02", "ge", voxel=(4.0, 4.0, 4.0))]
    bids, out = make_bids(tmp_path / "bids", scans, shape=(32, 32, 32)), tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bids_harmonize.cli.run",
            str(bids),
            str(out),
            "participant",
            "--nprocs",
            "2",
            "--skip-bids-validation",
            "-w",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"Preprocessed 2 image(s), harmonized 0; outputs in {out}",
        f"Reports: {out / 'sub-01.html'}, {out / 'sub-02.html'}",
    ]
    lines = done.stderr.splitlines()
    assert all(re.match(r"(INFO|WARNING) bids_harmonize[.\w]*: ", line) for line in lines), lines
    progress = [PROGRESS.match(line) for line in lines if PROGRESS.match(line)]
    measured = "tissue volumes of the preprocessed image measured"
    assert sorted((m[1], m[2]) for m in progress) == [
        ("sub-01_T1w", "outputs written"),
        ("sub-01_T1w", "preprocessed"),
        ("sub-01_T1w", measured),
        ("sub-02_T1w", "outputs written"),
        ("sub-02_T1w", "preprocessed"),
        ("sub-02_T1w", measured),
    ]
    assert [(int(m[3]), int(m[5])) for m in progress] == [(k, 6 - k) for k in range(1, 7)]
    assert len(lines) <= 15  # before the quiet console: ~90 lines for these two images
    node_log = next((out / "logs").glob("nipype-*.log")).read_text()
    assert "[Node] Setting-up" in node_log and "[Node] Finished" in node_log
