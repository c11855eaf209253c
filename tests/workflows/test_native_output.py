"""The harmonized native image carries the model's change to the scan itself: a scan with finer
voxels than the model grid keeps its detail, and there is no seam at the template's edge."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bids_harmonize.interfaces.harmonize import HarmonizedToNative
from bids_harmonize.model.curves import apply_lookup
from bids_harmonize.preproc import operations as op

NATIVE_SHAPE = (64, 64, 64)  # 1 mm
SOURCE = op.IntensityScale(0.0, 1000.0)
TARGET = op.IntensityScale(0.0, 2000.0)


def fine_scan(seed: int = 0) -> np.ndarray:
    """A 'head' at 1 mm with texture at the voxel scale (what a 2 mm model grid cannot hold)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(NATIVE_SHAPE).astype(np.float32)
    radius = np.sqrt(((grid - 31.5) ** 2).sum(0))
    head = (radius < 26).astype(np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=NATIVE_SHAPE), 0.7)
    return (head * (600 + 150 * texture / texture.std())).astype(np.float32)


def gradient_energy(image: np.ndarray, mask: np.ndarray) -> float:
    return float(sum((np.gradient(image, axis=axis)[mask] ** 2).sum() for axis in range(3)))


def run_to_native(tmp_path, native: np.ndarray, lookup: tuple[np.ndarray, np.ndarray], residual: float) -> np.ndarray:
    """Template grid: 2 mm covering only the central 48 mm (the scan reaches beyond it)."""
    native_img = nb.Nifti1Image(native, np.eye(4))
    template_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    template_affine[:3, 3] = 8.0
    to_template = np.linalg.inv(np.eye(4)) @ template_affine
    template_data = ndimage.affine_transform(native, to_template, output_shape=(24, 24, 24), order=1)
    model_input = SOURCE.to_model(template_data)
    harmonized = apply_lookup(model_input, *lookup) + residual * (model_input > -0.99)
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("native", "model_input", "harmonized")}
    nb.Nifti1Image(native, np.eye(4)).to_filename(paths["native"])
    nb.Nifti1Image(model_input, template_affine).to_filename(paths["model_input"])
    nb.Nifti1Image(harmonized.astype(np.float32), template_affine).to_filename(paths["harmonized"])
    transform = op.save_transform(sitk.AffineTransform(3), tmp_path / "xfm.txt")
    (tmp_path / "scale.json").write_text(json.dumps(SOURCE.as_dict()))
    (tmp_path / "lookup.json").write_text(json.dumps({"inputs": lookup[0].tolist(), "outputs": lookup[1].tolist()}))
    node = HarmonizedToNative(
        harmonized=str(paths["harmonized"]), model_input=str(paths["model_input"]), native=str(paths["native"]),
        lookup_file=str(tmp_path / "lookup.json"), transform=str(transform), source_scale=str(tmp_path / "scale.json"),
        target_lo=TARGET.lo, target_hi=TARGET.hi,
    )
    result = node.run(cwd=str(tmp_path))
    assert nb.load(result.outputs.native_file).shape == native_img.shape
    return np.asarray(nb.load(result.outputs.native_file).dataobj)


def test_finer_native_voxels_keep_their_detail(tmp_path):
    native = fine_scan()
    knots = np.linspace(-1, 1, 33, dtype=np.float32)
    lookup = (knots, np.sign(knots) * np.abs(knots) ** 0.8)  # a gentle contrast change
    output = run_to_native(tmp_path, native, lookup, residual=0.02)
    brain = ndimage.binary_erosion(native > 0, iterations=3)
    # Compare in each image's own units: the target scale doubles intensities.
    ratio = gradient_energy(output / TARGET.hi, brain) / gradient_energy(native / SOURCE.hi, brain)
    assert ratio >= 0.9


def test_no_seam_at_the_edge_of_the_template_field_of_view(tmp_path):
    native = np.full(NATIVE_SHAPE, 500.0, dtype=np.float32)
    identity = np.linspace(-1, 1, 33, dtype=np.float32)
    output = run_to_native(tmp_path, native, (identity, identity), residual=0.0)
    # Inside and outside the template's 48 mm cube the same input maps to the same value.
    np.testing.assert_allclose(output, TARGET.to_scanner(SOURCE.to_model(native)), rtol=1e-4)
