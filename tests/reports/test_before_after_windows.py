"""The participant report's before/after panel: each image its own window, the difference in
normalised units (issue 18: a source in other scanner units was black in the shared window)."""

import nibabel as nb
import numpy as np
from scipy import ndimage

from bids_harmonize.reports import figures


def _head(shape=(24, 28, 24), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    inside = (((grid - centre[:, None, None, None]) / (np.array(shape)[:, None, None, None] * 0.4)) ** 2).sum(0) < 1
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    return np.where(inside, 1.0 + texture, 0.0).astype(np.float32), inside


def test_each_image_gets_its_own_window_inside_the_brain():
    image, inside = _head()
    lo, hi = figures.grey_window(image, inside)
    assert (lo, hi) == tuple(np.percentile(image[inside], [1, 99]))
    scaled_lo, scaled_hi = figures.grey_window(1000.0 * image + 50.0, inside)
    assert abs(scaled_lo - (1000.0 * lo + 50.0)) < 1e-2
    assert abs(scaled_hi - (1000.0 * hi + 50.0)) < 1e-2
    assert figures.grey_window(np.zeros_like(image), inside) == (0.0, 1.0)


def test_a_change_of_units_alone_leaves_no_difference():
    image, inside = _head()
    other_units = 850.0 * image + 120.0
    difference = figures.standardised(other_units, inside) - figures.standardised(image, inside)
    assert np.abs(difference[inside]).max() < 1e-3
    contrast_changed = np.where(inside, image**3, 0.0)
    changed = figures.standardised(contrast_changed, inside) - figures.standardised(image, inside)
    assert np.abs(changed[inside]).max() > 0.1


def test_the_mosaic_names_both_windows_and_draws(tmp_path):
    image, inside = _head()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    before = nb.Nifti1Image(image, affine)
    after = nb.Nifti1Image((900.0 * image + 10.0).astype(np.float32), affine)
    mask = nb.Nifti1Image(inside.astype(np.uint8), affine)
    uri = figures.before_after_mosaic(before, after, mask)
    assert uri.startswith("data:image/png;base64,")


def _check(dice, distance=4.5):
    return {
        "TemplateMaskDice": dice,
        "BoundaryDistance95mm": distance,
        "BrainVolumeML": 1500.0,
        "TemplateMaskVolumeML": 1700.0,
        "Thresholds": {"MinDice": 0.9, "MaxBoundaryDistance95mm": 7.5},
        "Flagged": dice < 0.9 or distance > 7.5,
    }


def test_the_mask_check_is_judged_against_the_dataset_too():
    from bids_harmonize.reports.participant import _ImageSection

    rng = np.random.default_rng(3)
    dataset = [_check(0.952 + 0.004 * v) for v in rng.standard_normal(15)]
    odd = _check(0.925)  # passes the fixed bounds, far below its peers
    section = _ImageSection(None, None, [*dataset, odd])
    text = section._mask_check(odd)
    assert "Against this dataset (16 images" in text
    assert any("unusual for this dataset" in w for w in section.warnings)
    assert not any("Brain mask check failed" in w for w in section.warnings)

    typical = _ImageSection(None, None, dataset)
    typical._mask_check(dataset[0])
    assert typical.warnings == []

    few = _ImageSection(None, None, dataset[:3])
    assert "not judged" in few._mask_check(dataset[0]) and few.warnings == []


def test_dataset_mask_checks_reads_the_mask_sidecars_of_the_run_and_of_sites_tsv(tmp_path):
    import json
    from types import SimpleNamespace

    from bids_harmonize.bids.naming import sidecar_path
    from bids_harmonize.bids.outputs import OutputLayout
    from bids_harmonize.reports.collect import dataset_mask_checks, record_from_relpath

    template = SimpleNamespace(name="MNI152NLin2009cSym", resolution=2)
    layout = OutputLayout(tmp_path)
    relpaths = [f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz" for i in range(1, 4)]
    for i, relpath in enumerate(relpaths[:2]):  # the third image has no mask sidecar
        path = sidecar_path(layout.output(record_from_relpath(tmp_path, relpath), "native_mask"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"MaskCheck": _check(0.95 - 0.01 * i)}))
    layout.sites_table.write_text("path\tsite\n" + "".join(f"{r}\tA\n" for r in relpaths[1:]))
    run = [record_from_relpath(tmp_path, relpaths[0])]
    checks = dataset_mask_checks(tmp_path, run, template)
    assert sorted(c["TemplateMaskDice"] for c in checks) == [0.94, 0.95]
