"""A run that fails, or skips harmonization, still leaves a report that says so."""

import re
from types import SimpleNamespace

import nibabel as nb
import numpy as np

from bids_harmonize.cli.run import main
from bids_harmonize.reports import skip_reasons
from helpers import Scan, make_bids, scan_path


def visible_text(html_text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html_text, flags=re.S)))


def test_a_broken_image_gets_a_report_naming_the_failure(tmp_path):
    scan = Scan("01", "siemens_a")
    bids = make_bids(tmp_path / "bids", [scan])
    nb.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)).to_filename(scan_path(bids, scan))  # 4D: not a T1w
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "--contrasts", "T1w", "--nprocs", "1", "--skip-bids-validation",
                 "-w", str(tmp_path / "work")])
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
    assignments = [_assignment("sub-01/anat/sub-01_T1w.nii.gz"), _assignment("sub-02/anat/sub-02_T1w.nii.gz"),
                   _assignment("sub-02/anat/sub-02_T2w.nii.gz", "T2w")]
    not_harmonized = ["sub-02/anat/sub-02_T1w.nii.gz: site 'X' is not one the model was trained on (A, B); preprocessed only."]
    reasons = skip_reasons(assignments, {"T1w"}, not_harmonized, "none in OUT/models")
    assert "sub-01/anat/sub-01_T1w.nii.gz" not in reasons  # it was harmonized
    assert reasons["sub-02/anat/sub-02_T1w.nii.gz"].startswith("site 'X' is not one the model was trained on")
    assert "no T2w model bundle was found (none in OUT/models)" in reasons["sub-02/anat/sub-02_T2w.nii.gz"]
