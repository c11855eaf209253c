"""The smaller findings of the reliability round 2 (issue 19): each gets the clear answer of its
kind (the file, the fix, a documented exit code) and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bids_harmonize.cli.run import main
from helpers import Scan, make_bids, write_bundle

HEAD = (32, 32, 32)


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    scans = [Scan("01", "siemens_a", voxel=(4.0, 4.0, 4.0)), Scan("02", "ge", voxel=(4.0, 4.0, 4.0))]
    return make_bids(tmp_path / "bids", scans, shape=HEAD)


def run(bids: Path, out: Path, *extra: str, level: str = "participant") -> int:
    return main([str(bids), str(out), level, "--nprocs", "1", *extra])


@pytest.mark.parametrize("value", ["abc", 0, 2.5, True])
def test_a_plugin_argument_of_the_wrong_type_names_the_file_and_the_fix(bids, tmp_path, capsys, value):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text(f"plugin: MultiProc\nplugin_args: {{n_procs: {json.dumps(value)}}}\n")
    assert run(bids, tmp_path / "out", "--use-plugin", str(plugin)) == 64
    err = capsys.readouterr().err
    assert f"--use-plugin {plugin}: plugin_args.n_procs must be a whole number" in err and "Fix:" in err
    assert "Traceback" not in err


def test_garbage_weights_with_a_matching_checksum_are_an_unusable_bundle(bids, tmp_path, capsys):
    from bids_harmonize.model.bundle import sha256_of

    def garbage(card):
        weights = tmp_path / "m" / "model.safetensors"
        weights.write_bytes(b"\xff" * 64)
        card["weights"]["sha256"] = sha256_of(weights)

    bundle = write_bundle(tmp_path / "m", edit=garbage)
    assert run(bids, tmp_path / "out", "--model", str(bundle)) == 66
    err = capsys.readouterr().err
    assert "model.safetensors: not a readable safetensors file" in err and "Fix:" in err and "Traceback" not in err


def test_another_pipelines_output_folder_is_refused_before_anything_is_written(bids, tmp_path, capsys):
    out = tmp_path / "fmriprep"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps({"Name": "x", "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    assert run(bids, out) == 64
    assert "belongs to another pipeline" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["dataset_description.json"]


def test_one_site_says_why_nothing_is_trained_and_what_to_do(tmp_path, caplog):
    from bids_harmonize.config import RunConfig
    from bids_harmonize.levels.training import train_contrast
    from bids_harmonize.sites import SiteAssignment

    bids = make_bids(tmp_path / "bids", [Scan("01", "ge"), Scan("02", "ge")])
    from bids_harmonize.bids.layout import discover_images

    images = discover_images(bids).images
    assignments = [SiteAssignment(i, "GE", "inferred", "", None, None, []) for i in images]
    config = RunConfig(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="group", work_dir=tmp_path / "w")
    assert train_contrast(config, "T1w", assignments, None, None, "cpu", 1) == ""
    assert "Not training. Fix:" in caplog.text and "--sites-only" in caplog.text and "--site-table" in caplog.text


@pytest.mark.parametrize("problem", ["empty", "duplicate"])
def test_the_final_line_names_the_left_out_image_and_its_own_fix(tmp_path, capsys, problem):
    bids = make_bids(tmp_path / "bids", [Scan("01", "ge", voxel=(4.0, 4.0, 4.0))], shape=HEAD)
    image = bids / "sub-01/anat/sub-01_T1w.nii.gz"
    if problem == "empty":
        image.write_bytes(b"")
    else:
        import nibabel as nb

        nb.save(nb.load(image), image.with_name("sub-01_T1w.nii"))
    assert run(bids, tmp_path / "out") == 18
    last = capsys.readouterr().err.strip().splitlines()[-2:]
    assert "check the labels" not in "\n".join(last) and "sub-01/anat/sub-01_T1w.nii" in "\n".join(last)
    assert (
        ("empty (0 bytes)" in "\n".join(last) and "Fix: convert" in "\n".join(last))
        if problem == "empty"
        else ("Fix: delete one of them" in "\n".join(last))
    )


def test_a_crashed_node_is_one_console_line_and_its_traceback_stays_in_the_crash_file(tmp_path):
    import logging

    from bids_harmonize.console import _without_traceback
    from bids_harmonize.levels.run import crash_summary

    crash = tmp_path / "crash-x-scale.txt"
    crash.write_text(
        "Node: wf.preproc_sub_02_T1w.scale\nWorking directory: /w\n\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise ValueError\nValueError: degenerate intensity range\n'
    )
    record = logging.LogRecord(
        "nipype.workflow",
        logging.ERROR,
        "",
        0,
        "Node %s failed.\nSaving crash info to %s\n%s",
        ("scale", crash, crash.read_text().split("\n", 3)[3]),
        None,
    )
    assert _without_traceback(record) and record.getMessage() == f"Node scale failed.\nSaving crash info to {crash}"
    assert crash_summary(crash) == f"wf.preproc_sub_02_T1w.scale: ValueError: degenerate intensity range ({crash})"
