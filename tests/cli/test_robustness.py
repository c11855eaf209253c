"""Every case of the robustness matrix (issue 11) that the CLI must answer before any work starts:
a clear error naming the file and the fix, with the BIDS Apps exit code, and no traceback."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.screen import image_problem
from bids_harmonize.cli.parser import parse_args
from bids_harmonize.cli.run import main
from bids_harmonize.runtime import participant_locks
from helpers import Scan, head_phantom, make_bids, write_bundle

HEAD = (32, 32, 32)  # 4 mm voxels: 128 mm, enough to pass screening


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    scans = [Scan("01", "siemens_a", voxel=(4.0, 4.0, 4.0)), Scan("02", "ge", voxel=(4.0, 4.0, 4.0))]
    return make_bids(tmp_path / "bids", scans, shape=HEAD)


def run(bids: Path, out: Path, *extra: str) -> int:
    return main([str(bids), str(out), "participant", "--nprocs", "1", *extra])


# ----------------------------------------------------------------------------- 1, 2: the model
def test_nan_in_a_model_card_is_refused(bids, tmp_path, capsys):
    bundle = write_bundle(
        tmp_path / "m", edit=lambda c: c["sites"][0]["signature"]["intensity_scale"].update(hi=float("nan"))
    )
    assert run(bids, tmp_path / "out", "--model", str(bundle)) == 66
    err = capsys.readouterr().err
    assert "model.json: invalid model card" in err and "intensity_scale.hi is nan" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["plain file", "folder without model.json", "folder with only T2w/"])
def test_an_unusable_model_is_an_error_not_a_silent_fallback(bids, tmp_path, capsys, kind):
    model = tmp_path / "model"
    if kind == "plain file":
        model.write_text("weights")
    elif kind == "folder without model.json":
        model.mkdir()
    else:
        write_bundle(model / "T2w")
    assert run(bids, tmp_path / "out", "--model", str(model)) == 66
    err = capsys.readouterr().err
    assert f"--model {model}" in err and "Fix:" in err
    if kind == "folder with only T2w/":
        assert "bundles only for T2w" in err
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_a_model_of_another_contrast_is_refused(bids, tmp_path, capsys):
    bundle = write_bundle(tmp_path / "m", edit=lambda c: c["input"].update(contrast="T2w"))
    assert run(bids, tmp_path / "out", "--model", str(bundle / "model.json")) == 66
    assert "is a T2w model, but the selected images are T1w" in capsys.readouterr().err


def test_a_resolution_that_contradicts_the_model_is_refused_with_the_fix(bids, tmp_path, capsys):
    bundle = write_bundle(tmp_path / "m", resolution=2)
    assert run(bids, tmp_path / "out", "--model", str(bundle), "--template-resolution", "1") == 64
    err = capsys.readouterr().err
    assert (
        "--template-resolution 1 contradicts the model" in err
        and "at 2 mm" in err
        and "leave --template-resolution out" in err
    )


def test_a_model_without_an_input_contract_is_refused(bids, tmp_path, capsys):
    bundle = write_bundle(tmp_path / "m", edit=lambda c: c.pop("input"))
    assert run(bids, tmp_path / "out", "--model", str(bundle)) == 66
    assert "records no input contract" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 3: reference style
def test_a_relative_reference_path_is_made_absolute_before_the_run(bids, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(bids)
    opts = parse_args(
        [str(bids), str(tmp_path / "out"), "participant", "--target-style", "reference:sub-01/anat/sub-01_T1w.nii.gz"]
    )
    assert opts.target_style == f"reference:{bids / 'sub-01/anat/sub-01_T1w.nii.gz'}"
    assert run(bids, tmp_path / "out", "--target-style", "reference:sub-09_T1w.nii.gz") == 66
    assert "relative paths are taken from" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4: unwritable folders
@pytest.mark.parametrize("where", ["output_dir", "-w/--work-dir"])
def test_unwritable_output_or_work_dir_is_reported_before_anything_starts(bids, tmp_path, capsys, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out, extra = (blocker / "out", []) if where == "output_dir" else (tmp_path / "out", ["-w", str(blocker / "work")])
    assert run(bids, out, *extra) == 64
    err = capsys.readouterr().err
    assert f"{where} {blocker}" in err and "is not writable" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 5: filter file
def test_the_readme_filter_example_is_valid_and_selects_nothing_here(bids, tmp_path, capsys):
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"t1w": {"acquisition": "mprage"}}))
    assert main([str(bids), str(tmp_path / "out"), "group", "--sites-only", "--bids-filter-file", str(filters)]) == 18
    assert "No T1w/T2w images" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 7: bad images
def _write(path: Path, data: np.ndarray, voxel: float = 1.0) -> Path:
    nb.Nifti1Image(data, np.diag([voxel, voxel, voxel, 1.0])).to_filename(path)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: _write(p, np.ones((40, 40, 40, 3), np.float32)), "is a 4D image"),
        (lambda p: _write(p, np.full((120, 120, 120), np.nan, np.float32)), "no finite value"),
        (lambda p: _write(p, np.zeros((120, 120, 120), np.int16)), "same value (0) in every voxel"),
        (lambda p: _write(p, np.random.default_rng(0).random((10, 10, 10), np.float32)), "too small to hold a head"),
        (
            lambda p: _write(p, np.random.default_rng(0).random((8, 8, 8), np.float32), voxel=32.0),
            "8x8x8 voxels of 32x32x32 mm",
        ),
        (lambda p: _write(p, np.random.default_rng(0).random((64, 64, 64), np.float32), voxel=2.0), "looks like noise"),
        (
            lambda p: _write(p, np.pad(np.ones((1, 1, 1), np.int16), 31), voxel=4.0),
            "only 1 voxel(s) above its background",
        ),
    ],
)
def test_images_preprocessing_cannot_use_are_named_with_the_reason(tmp_path, make, reason):
    problem = image_problem(make(tmp_path / "x_T1w.nii.gz"))
    assert problem is not None and reason in problem and "Fix:" in problem


def test_a_truncated_gzip_image_is_named(tmp_path):
    good = _write(tmp_path / "good_T1w.nii.gz", head_phantom((120, 120, 120)))
    assert image_problem(good) is None
    truncated = tmp_path / "cut_T1w.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "probably truncated" in image_problem(truncated)
    with gzip.open(truncated, "rb") as handle:  # the header alone still reads: discovery cannot see this
        assert len(handle.read(348)) == 348


def test_when_no_image_is_usable_the_run_stops_naming_each(tmp_path, capsys):
    bids = make_bids(tmp_path / "tiny", [Scan("01", "ge")])  # 6x6x6 voxels of 1 mm
    assert run(bids, tmp_path / "out") == 18
    err = capsys.readouterr().err
    assert "sub-01/anat/sub-01_T1w.nii.gz is too small to hold a head" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 10, 11
def test_a_participant_already_running_into_out_is_refused(bids, tmp_path, capsys):
    with participant_locks(OutputLayout(tmp_path / "out").locks, ["sub-01"]):
        assert run(bids, tmp_path / "out", "--participant-label", "01") == 1
    err = capsys.readouterr().err
    assert "sub-01 is being processed into" in err and "--participant-label" in err and "Traceback" not in err


def test_an_invalid_plugin_file_is_a_usage_error_naming_the_file(bids, tmp_path, capsys):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args: [n_procs: 2\n")
    assert run(bids, tmp_path / "out", "--use-plugin", str(plugin)) == 64
    err = capsys.readouterr().err
    assert f"--use-plugin {plugin} cannot be read as YAML" in err and "Traceback" not in err
    plugin.write_text("plugin: NoSuchPlugin\n")
    assert run(bids, tmp_path / "out", "--use-plugin", str(plugin)) == 64
    assert "is not a Nipype plugin" in capsys.readouterr().err


def test_a_multiproc_plugin_file_keeps_the_forkserver(tmp_path):
    from bids_harmonize.config import RunConfig
    from bids_harmonize.levels.run import plugin_settings

    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args: {n_procs: 3, memory_gb: 8}\n")
    config = RunConfig(
        bids_dir=tmp_path,
        output_dir=tmp_path,
        analysis_level="participant",
        work_dir=tmp_path,
        nprocs=2,
        use_plugin=plugin,
    )
    assert plugin_settings(config) == (
        "MultiProc",
        {"n_procs": 3, "memory_gb": 8, "raise_insufficient": False, "mp_context": "forkserver"},
    )
    plugin.write_text("plugin: SLURM\nplugin_args: {sbatch_args: '--time=1:00:00'}\n")
    assert plugin_settings(config) == (
        "SLURM",
        {"sbatch_args": f"--time=1:00:00 --comment=bids_harmonize:{config.run_id}"},
    )


def test_local_runs_poll_often_and_cluster_runs_keep_nipypes_pace(tmp_path):
    from bids_harmonize.config import RunConfig
    from bids_harmonize.levels.run import LOCAL_POLL_SECONDS, execution_settings

    config = RunConfig(bids_dir=tmp_path, output_dir=tmp_path, analysis_level="participant", work_dir=tmp_path)
    assert execution_settings(config, "MultiProc")["poll_sleep_duration"] == LOCAL_POLL_SECONDS < 1
    slurm = execution_settings(config, "SLURM")
    assert "poll_sleep_duration" not in slurm and slurm["crashfile_format"] == "txt"


def test_scheduler_plugins_get_logname_and_size_node_threads_by_the_job(tmp_path, monkeypatch):
    from bids_harmonize.config import RunConfig
    from bids_harmonize.levels.run import omp_threads, training_threads
    from bids_harmonize.levels.scheduler import set_environment as scheduler_environment

    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: SLURM\nplugin_args: {sbatch_args: '--mem=4G --cpus-per-task=3'}\n")
    config = RunConfig(
        bids_dir=tmp_path,
        output_dir=tmp_path,
        analysis_level="participant",
        work_dir=tmp_path,
        nprocs=64,
        use_plugin=plugin,
    )
    assert (omp_threads(config), training_threads(config)) == (3, 8)
    plugin.write_text("plugin: SLURM\nplugin_args: {sbatch_args: '--mem=4G'}\n")
    assert omp_threads(config) == 1
    config.omp_nthreads = 2
    assert omp_threads(config) == 2
    monkeypatch.delenv("LOGNAME", raising=False)
    scheduler_environment("MultiProc")
    assert "LOGNAME" not in os.environ
    scheduler_environment("SLURM")
    assert os.environ["LOGNAME"]


def test_a_stopped_run_cancels_the_slurm_jobs_it_submitted_and_only_those(tmp_path, monkeypatch):
    from bids_harmonize.levels.scheduler import cancel_slurm_jobs

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text(
        "#!/bin/sh\nprintf '11 bids_harmonize:run-a\\n12 (null)\\n13 bids_harmonize:run-b\\n"
        "14 bids_harmonize:run-a\\n'\n"
    )
    (fake / "scancel").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "cancelled"}\n')
    for tool in ("squeue", "scancel"):
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    assert cancel_slurm_jobs("run-a") == ["11", "14"]
    assert (tmp_path / "cancelled").read_text().split() == ["11", "14"]
    assert cancel_slurm_jobs("run-c") == []
