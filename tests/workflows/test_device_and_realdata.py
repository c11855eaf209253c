import importlib.util
import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.cli.run import main

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
IXI_HEADS = 6  # of 24: the whole set runs in benchmarks/realdata_roundtrip.py


def test_asking_for_a_missing_gpu_fails_fast_with_the_fix(multisite_bids, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main([str(multisite_bids), str(tmp_path / "out"), "participant", "--device", "cuda"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--gpus all" in err and "--nv" in err
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


@pytest.fixture
def roundtrip(realmix):
    """benchmarks/realdata_roundtrip.py as a module (its dataset builder and measures)."""
    spec = importlib.util.spec_from_file_location("realdata_roundtrip", BENCHMARKS / "realdata_roundtrip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if len(list((realmix.parent / "ixi_hh").glob("sub-*"))) < IXI_HEADS:
        pytest.skip("../shared/data/ixi_hh is not present")
    return module


@pytest.mark.slow
@pytest.mark.realdata
def test_real_heads_go_participant_group_participant(roundtrip, realmix, tmp_path):
    """Issue 18's real-data check on a subset (benchmarks/realdata_roundtrip.py runs all 24 IXI
    heads): 4 scanners, every step exits 0, native outputs on the raw grid, plausible masks, and the
    IXI site harmonized to itself keeps its tissue volumes."""
    bids = roundtrip.real_heads_dataset(realmix.parent, IXI_HEADS, tmp_path)
    out = tmp_path / "out"
    timings = roundtrip.run_steps(bids, out, tmp_path / "work", nprocs=2)
    assert [code for _, code in timings.values()] == [0, 0, 0], timings
    raws = sorted(raw for subject in bids.glob("sub-*") for raw in subject.rglob("sub-*_T1w.nii.gz"))  # symlinks
    assert len(raws) == IXI_HEADS + 3  # including realmix's 4.8 mm sagittal 2D FLASH
    for raw_path in raws:
        relative = raw_path.relative_to(bids)
        stem = raw_path.name.replace("_T1w.nii.gz", "")
        folder = out / relative.parent
        raw = nb.load(raw_path)
        for desc in ("preproc", "harmonized"):
            image = nb.load(folder / f"{stem}_desc-{desc}_T1w.nii.gz")
            assert image.shape == raw.shape
            np.testing.assert_allclose(image.affine, raw.affine, atol=1e-4)
            assert np.isfinite(image.get_fdata()).all()
        mask = nb.load(folder / f"{stem}_desc-brain_mask.nii.gz").get_fdata()
        assert 0.02 < mask.mean() < 0.8  # a brain, not nothing and not everything
    # The learned mask (deepbet) is the mask, its sidecar names it, and its check passes on every
    # real scan, the 2D sagittal FLASH and the 2 mm Prisma MPRAGE included.
    for sidecar in out.rglob("*_desc-brain_mask.json"):
        fields = json.loads(sidecar.read_text())
        assert fields["MaskMethod"]["Name"] == "deepbet" and len(fields["MaskMethod"]["WeightsSHA256"]) == 2
        assert fields["MaskCheck"]["Flagged"] is False, (sidecar, fields["MaskCheck"])
    low, high = roundtrip.BRAIN_ML
    masks = roundtrip.mask_volumes(out, "IXI")
    assert len(masks) == IXI_HEADS and all(low <= ml <= high for ml in masks.values()), masks
    changes = roundtrip.self_changes(out, "IXI")
    assert len(changes) == IXI_HEADS
    for tissue in roundtrip.TISSUES:
        mean_abs = np.mean([abs(change[tissue]) for change in changes.values()])
        assert mean_abs < roundtrip.SELF_CHANGE_PERCENT, (tissue, changes)
    assert "Tissue volumes before / after" in (out / "group.html").read_text()
