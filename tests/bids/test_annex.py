"""Partially fetched DataLad datasets: broken symlinks where annexed content is not present.

The first tests fake the links; the last builds a real DataLad dataset (skipped when
``datalad`` or ``git-annex`` is absent; .ci/run installs both), drops part of its content and
runs the participant and group levels on the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_harmonize.bids.layout import discover_images
from helpers import Scan, make_bids


def _unfetch(path: Path) -> None:
    """Replace a file by a dangling link, as `datalad drop` leaves it."""
    path.unlink()
    path.symlink_to(Path("../../.git/annex/objects/XX/absent") / path.name)


def test_an_absent_sidecar_of_another_subject_does_not_stop_indexing(tmp_path, caplog):
    bids = make_bids(tmp_path / "bids", [Scan("01", "ge"), Scan("02", "ge"), Scan("03", "ge")])
    _unfetch(bids / "sub-03/anat/sub-03_T1w.json")
    for validate in (True, False):
        found = discover_images(bids, participant_labels=["01", "02"], validate=validate)
        assert [i.subject for i in found.images] == ["01", "02"] and not found.skipped
    assert "sub-03" not in caplog.text


def test_a_selected_image_with_an_absent_sidecar_is_named_with_the_datalad_fix(tmp_path):
    bids = make_bids(tmp_path / "bids", [Scan("01", "ge"), Scan("02", "ge")])
    _unfetch(bids / "sub-02/anat/sub-02_T1w.json")
    _unfetch(bids / "sub-01/anat/sub-01_T1w.nii.gz")
    found = discover_images(bids)
    assert found.images == []
    assert any("datalad get sub-02/anat/sub-02_T1w.json" in s for s in found.skipped)
    assert any("datalad get sub-01/anat/sub-01_T1w.nii.gz" in s for s in found.skipped)


def test_an_absent_top_level_sidecar_applies_to_every_image_of_its_suffix(tmp_path):
    bids = make_bids(
        tmp_path / "bids",
        [Scan("01", "ge"), Scan("01", "ge", suffix="T2w")],
        dataset_sidecars={"T2w.json": {"EchoTime": 0.5}},
    )
    _unfetch(bids / "T2w.json")
    found = discover_images(bids)
    assert [i.suffix for i in found.images] == ["T1w"]
    assert any("its sidecar T2w.json has no content" in s for s in found.skipped)


COMMON = ["--template-resolution", "2", "--contrasts", "T1w", "--nprocs", "1", "--omp-nthreads", "1"]


def _tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip unless datalad (PyPI, beside this Python or on PATH) and git-annex (Debian) are here."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for tool in ("datalad", "git-annex", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (pip install datalad; apt-get install git-annex)")


@pytest.mark.slow
def test_a_real_partial_datalad_dataset_runs_participant_and_group(tmp_path, capsys, monkeypatch):
    """datalad create + save of a simulated dataset, drop part of its content, run on the rest."""
    _tools(monkeypatch)
    for role in ("AUTHOR", "COMMITTER"):  # git commits need an identity, which a CI machine may lack
        monkeypatch.setenv(f"GIT_{role}_NAME", "bids_harmonize tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@example.org")
    from bids_harmonize.cli.run import main
    from bids_harmonize.simulate import simulate_dataset

    dataset = simulate_dataset(tmp_path / "ds", n_sites=2, n_subjects=4, resolution_mm=2.0, seed=4).bids_root
    for sidecar in dataset.glob("sub-*/anat/*_T1w.json"):  # git-annex stores equal files once: make each unique
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "ImageComments": sidecar.name}))
    subprocess.run(["datalad", "create", "--force", str(dataset)], check=True, capture_output=True)
    subprocess.run(["datalad", "save", "-d", str(dataset), "-m", "simulated"], check=True, capture_output=True)
    dropped = ["sub-03/anat/sub-03_T1w.json", "sub-04/anat/sub-04_T1w.nii.gz"]
    subprocess.run(
        ["datalad", "drop", "--reckless", "availability", "-d", str(dataset), *[str(dataset / p) for p in dropped]],
        check=True,
        capture_output=True,
    )
    assert all((dataset / p).is_symlink() and not (dataset / p).exists() for p in dropped)
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file() and ".git" not in p.parts}
    out = tmp_path / "out"
    assert main([str(dataset), str(out), "participant", "--participant-label", "01", "02", *COMMON]) == 0
    assert main([str(dataset), str(out), "participant", "--participant-label", "03", *COMMON]) == 18
    err = capsys.readouterr().err
    assert "datalad get sub-03/anat/sub-03_T1w.json" in err and "Traceback" not in err
    assert main([str(dataset), str(out), "group", *COMMON, "--iterations", "4", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert "datalad get sub-04/anat/sub-04_T1w.nii.gz" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file() and ".git" not in p.parts} == before
