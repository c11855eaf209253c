"""Output names of the sink: no two outputs of one session share a name."""

from pathlib import Path

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.outputs import OUTPUTS, output_path
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.interfaces.bids import _Writer


def names(relpath: str, suffix: str) -> set[str]:
    record = ImageRecord(Path("/raw") / relpath, relpath, "01", "1", suffix)
    return {output_path(Path("/out"), record, name, "MNI152NLin2009cSym", 2).name for name in OUTPUTS}


def test_t1w_and_t2w_of_one_session_never_share_an_output_name():
    t1 = names("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "T1w")
    t2 = names("sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz", "T2w")
    assert len(t1) == len(t2) == len(OUTPUTS) and not t1 & t2
    assert "sub-01_ses-1_desc-brain_mask.nii.gz" in t1 and "sub-01_ses-1_space-T2w_desc-brain_mask.nii.gz" in t2
    assert "sub-01_ses-1_space-MNI152NLin2009cSym_res-2_desc-harmonized_T2w.nii.gz" in t2


def test_template_space_sidecars_say_what_their_res_means():
    record = ImageRecord(Path("/raw/sub-01/anat/sub-01_T1w.nii.gz"), "sub-01/anat/sub-01_T1w.nii.gz", "01", None, "T1w")
    writer = _Writer(
        Path("/out"),
        record,
        derivatives.Provenance(),
        "MNI152NLin2009cSym",
        {"site": "A", "provenance": "inferred", "evidence": ""},
    )
    writer.resolution = 2
    assert "2 mm" in writer._sidecar(OUTPUTS["template_preproc"], None)["Resolution"]["2"]
    assert "Resolution" not in writer._sidecar(OUTPUTS["native_preproc"], None)
