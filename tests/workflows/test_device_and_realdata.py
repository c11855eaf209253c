import json

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.cli.run import main


def test_asking_for_a_missing_gpu_fails_fast_with_the_fix(multisite_bids, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main([str(multisite_bids), str(tmp_path / "out"), "participant", "--device", "cuda"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--gpus all" in err and "--nv" in err
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


@pytest.mark.slow
@pytest.mark.realdata
def test_realmix_goes_through_participant_preprocessing(realmix, tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            str(realmix),
            str(out),
            "participant",
            "--template-resolution",
            "2",
            "--nprocs",
            "2",
            "-w",
            str(tmp_path / "work"),
        ]
    )
    assert code == 0
    raws = sorted(realmix.rglob("sub-*_T1w.nii.gz"))
    assert len(raws) == 3  # including the 4.8 mm sagittal 2D FLASH
    for raw_path in raws:
        relative = raw_path.relative_to(realmix)
        stem = raw_path.name.replace("_T1w.nii.gz", "")
        folder = out / relative.parent
        raw = nb.load(raw_path)
        preproc = nb.load(folder / f"{stem}_desc-preproc_T1w.nii.gz")
        assert preproc.shape == raw.shape
        np.testing.assert_allclose(preproc.affine, raw.affine, atol=1e-4)
        mask = nb.load(folder / f"{stem}_desc-brain_mask.nii.gz").get_fdata()
        assert 0.02 < mask.mean() < 0.8  # a brain, not nothing and not everything
        assert (folder / f"{stem}_space-MNI152NLin2009cSym_res-2_desc-preproc_T1w.nii.gz").is_file()
    # The learned mask (deepbet) is the mask, its sidecar names it, and its check passes on all
    # three real scans, the 2D sagittal FLASH and the 2 mm Prisma MPRAGE included (the earlier
    # Spearman flag fired on both, though the Prisma mask was right).
    for sidecar in out.rglob("*_desc-brain_mask.json"):
        fields = json.loads(sidecar.read_text())
        assert fields["MaskMethod"]["Name"] == "deepbet" and len(fields["MaskMethod"]["WeightsSHA256"]) == 2
        assert fields["MaskCheck"]["Flagged"] is False, (sidecar, fields["MaskCheck"])
    decub = (out / "sub-decub01.html").read_text()
    for report in out.glob("sub-*.html"):
        assert "Brain mask check failed" not in report.read_text()
    assert "Not harmonized: no T1w model bundle was found" in decub
