"""The learned brain mask (deepbet), the brain-driven registration and the mask check.

A small simulated head (one phantom, 4 mm) runs everywhere; real heads (../shared/data) skip
cleanly when absent.
"""

from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
import SimpleITK as sitk

from bids_harmonize.preproc import brainmask, operations as op

pytest.importorskip("deepbet", reason="deepbet is installed by every setup path (pip install --no-deps deepbet)")

REAL = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """One simulated head, its raw image conformed, and its true brain mask on that grid."""
    pytest.importorskip("nilearn", reason="the simulator needs the 'simulate' extra")
    from bids_harmonize.simulate import simulate_dataset

    dataset = simulate_dataset(
        tmp_path_factory.mktemp("head") / "bids", n_sites=1, n_subjects=1, resolution_mm=4.0, seed=5
    )
    subject = dataset.subjects[0]
    image = op.conform(nb.load(dataset.native_image(subject)))
    _, truth = dataset.native_truth(subject, dataset.site_of_subject[subject])
    return image, op.conform(truth)


@pytest.fixture(scope="module")
def learned(phantom):
    return brainmask.learned_mask(phantom[0], "cpu", threads=1)


def test_the_learned_mask_finds_the_simulated_brain(phantom, learned):
    image, truth = phantom
    assert learned.shape == image.shape and learned.get_data_dtype() == np.uint8
    np.testing.assert_allclose(learned.affine, image.affine)
    assert brainmask.dice(learned.dataobj, truth.dataobj) > 0.9


def _displaced(mask: nb.Nifti1Image, shift_mm: float, degrees: float) -> nb.Nifti1Image:
    wrong = sitk.Euler3DTransform()
    centre = mask.affine[:3, :3] @ (np.array(mask.shape) / 2.0) + mask.affine[:3, 3]
    wrong.SetCenter((-centre[0], -centre[1], centre[2]))  # LPS
    wrong.SetRotation(0.0, 0.0, np.deg2rad(degrees))
    wrong.SetTranslation((shift_mm, 0.0, 0.0))
    return op.resample(mask, mask, wrong, nearest=True)


def test_the_mask_check_passes_a_right_registration_and_flags_a_wrong_one(phantom, learned):
    _, truth = phantom
    right = brainmask.check_mask(learned, truth)
    assert not right.flagged and right.dice > 0.9
    for shift, angle in ((10.0, 0.0), (0.0, 15.0)):
        wrong = brainmask.check_mask(learned, _displaced(truth, shift, angle))
        assert wrong.flagged, (shift, angle, wrong)
        assert wrong.boundary_mm > right.boundary_mm


def test_registration_driven_by_the_brain_carries_the_template_mask_onto_the_learned_one(phantom, learned):
    from bids_harmonize.templates import get_template

    template = nb.load(get_template("MNI152NLin2009cSym", 2, "T1w"))
    template_mask = nb.load(get_template("MNI152NLin2009cSym", 2, "mask", "brain"))
    image = phantom[0]
    transform = op.register_affine(image, template, moving_mask=learned, fixed_mask=template_mask)
    carried = op.resample(template_mask, image, op.inverse(transform), nearest=True)
    check = brainmask.check_mask(learned, carried)
    assert not check.flagged, check
    broken = sitk.CompositeTransform([op.inverse(transform), sitk.TranslationTransform(3, (12.0, 0.0, 0.0))])
    assert brainmask.check_mask(learned, op.resample(template_mask, image, broken, nearest=True)).flagged
    with pytest.raises(ValueError, match="both masks"):
        op.register_affine(image, template, moving_mask=learned)


def test_the_method_record_names_version_weights_and_citation():
    record = brainmask.method_record("deepbet")
    assert record["Name"] == "deepbet" and record["Version"] == brainmask.DEEPBET_VERSION
    assert set(record["WeightsSHA256"]) == {"model.pt", "bbox_model.pt"}
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in record["WeightsSHA256"].values())
    assert "10.1016/j.compbiomed.2024.108845" in record["Citation"]
    assert brainmask.method_record("template")["Name"] == "template"


def test_a_missing_deepbet_is_an_error_naming_the_fix(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "deepbet.utils", None)  # import fails as if not installed
    brainmask.method_record.cache_clear()
    try:
        with pytest.raises(brainmask.BrainMaskUnavailable, match="--no-deps deepbet==1.0.2.*--brain-mask template"):
            brainmask.check_available("deepbet")
        brainmask.check_available("template")  # the template path needs nothing more
    finally:
        brainmask.method_record.cache_clear()


def test_boundary_distance_and_dice_of_known_shapes():
    a = np.zeros((30, 30, 30), bool)
    a[5:25, 5:25, 5:25] = True
    assert brainmask.dice(a, a) == 1.0 and brainmask.boundary_distance(a, a, (2.0, 2.0, 2.0)) == 0.0
    shifted = np.roll(a, 3, axis=0)
    assert brainmask.dice(a, shifted) == pytest.approx(0.85)
    assert brainmask.boundary_distance(a, shifted, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert brainmask.boundary_distance(a, np.zeros_like(a), (1.0, 1.0, 1.0)) == float("inf")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(
    "relpath",
    [
        "ixi_hh/sub-IXI034/anat/sub-IXI034_T1w.nii.gz",  # the old mask's worst IXI head (Dice 0.91 with the new one)
        "realmix/sub-prisma01/anat/sub-prisma01_T1w.nii.gz",  # the old flag's false alarm
        # 4.8 mm 2D FLASH; the old mask missed the vertex
        "realmix/sub-decub01/ses-HFS/anat/sub-decub01_ses-HFS_T1w.nii.gz",
    ],
)
def test_real_heads_get_a_mask_that_passes_its_check(relpath):
    from bids_harmonize.templates import get_template

    path = REAL / relpath
    if not path.is_file():
        pytest.skip(f"{path} is not present (../shared/data)")
    image = op.conform(nb.load(path))
    mask = brainmask.learned_mask(image, "cpu", threads=2)
    volume = float(np.asarray(mask.dataobj).sum()) * brainmask.voxel_ml(mask)
    assert 900 < volume < 2000  # adult intracranial volumes, ml
    template = nb.load(get_template("MNI152NLin2009cSym", 2, "T1w"))
    template_mask = nb.load(get_template("MNI152NLin2009cSym", 2, "mask", "brain"))
    corrected, _ = op.n4_bias_correct(image)
    transform = op.register_affine(corrected, template, moving_mask=mask, fixed_mask=template_mask)
    carried = op.resample(template_mask, corrected, op.inverse(transform), nearest=True)
    assert not brainmask.check_mask(mask, carried).flagged
