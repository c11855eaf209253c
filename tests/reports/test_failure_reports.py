"""A run that fails, or skips harmonization, still leaves a report that says so."""

import re
from types import SimpleNamespace

import nibabel as nb
import numpy as np

from bids_harmonize.cli.run import main
from bids_harmonize.reports import skip_reasons
from helpers import Scan, head_phantom, make_bids, scan_path


def visible_text(html_text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html_text, flags=re.S)))


def test_a_failed_image_gets_a_report_naming_the_failure(tmp_path, monkeypatch):
    """Images that cannot be read are rejected before any work (tests/cli/test_robustness.py);
    this one passes that screen and then fails inside the workflow. The Linear plugin runs the
    nodes in this process, so the failure can be injected into preprocessing."""
    from bids_harmonize.preproc import operations

    def failing_conform(img):
        raise ValueError("expected a 3D image the scanner wrote, got something else")

    monkeypatch.setattr(operations, "conform", failing_conform)
    scan = Scan("01", "siemens_a")
    bids = make_bids(tmp_path / "bids", [scan])
    nb.Nifti1Image(
        head_phantom((40, 40, 40)).astype(np.float32),  # a head: passes screening
        np.diag([4.0, 4.0, 4.0, 1.0]),
    ).to_filename(scan_path(bids, scan))
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: Linear\n")
    out = tmp_path / "out"
    code = main(
        [
            str(bids),
            str(out),
            "participant",
            "--contrasts",
            "T1w",
            "--nprocs",
            "1",
            "--skip-bids-validation",
            "-w",
            str(tmp_path / "work"),
            "--use-plugin",
            str(plugin),
        ]
    )
    assert code == 1
    text = visible_text((out / "sub-01.html").read_text())
    assert "failed" in text and "Preprocessing did not finish for this image" in text
    assert "expected a 3D image" in text  # the crash file's last lines
    assert "SiemensPrismaFit3TSN67060" in text  # the site section is still there
    assert "bids_harmonize " + str(bids) in text  # provenance: the command line from the run's config
    assert (out / "logs" / "CITATION.md").is_file()


def _assignment(relpath, suffix="T1w"):
    return SimpleNamespace(image=SimpleNamespace(relpath=relpath, suffix=suffix))


def test_skip_reasons_say_why_each_image_was_not_harmonized():
    assignments = [
        _assignment("sub-01/anat/sub-01_T1w.nii.gz"),
        _assignment("sub-02/anat/sub-02_T1w.nii.gz"),
        _assignment("sub-02/anat/sub-02_T2w.nii.gz", "T2w"),
    ]
    not_harmonized = [
        "sub-02/anat/sub-02_T1w.nii.gz: site 'X' is not one the model was trained on (A, B); preprocessed only."
    ]
    reasons = skip_reasons(assignments, {"T1w"}, not_harmonized, "none in OUT/models")
    assert "sub-01/anat/sub-01_T1w.nii.gz" not in reasons  # it was harmonized
    assert reasons["sub-02/anat/sub-02_T1w.nii.gz"].startswith("site 'X' is not one the model was trained on")
    assert "no T2w model bundle was found (none in OUT/models)" in reasons["sub-02/anat/sub-02_T2w.nii.gz"]
