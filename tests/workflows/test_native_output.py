"""The harmonized native image carries the model's change to the scan itself: a scan with finer
voxels than the model grid keeps its detail, there is no seam at the template's edge, and the
methods text says what this code does."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from bids_harmonize.interfaces.harmonize import HarmonizedToNative
from bids_harmonize.model.curves import apply_lookup
from bids_harmonize.preproc import operations as op
from bids_harmonize.preproc.noise import denoise
from bids_harmonize.reports.citation import MethodsFacts, ModelUse, methods_markdown
from helpers import assert_denoised_alike

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


def run_to_native(
    tmp_path,
    native: np.ndarray,
    lookup: tuple[np.ndarray, np.ndarray],
    residual: float | np.ndarray,
    native_mask: np.ndarray | None = None,
    denoised: bool = False,
) -> np.ndarray:
    """Template grid: 2 mm covering only the central 48 mm (the scan reaches beyond it). The
    model's output is the lookup applied to its input plus `residual`: a value added inside the
    head, or an array on the template grid. `denoised`: the lookup says its input was denoised."""
    native_img = nb.Nifti1Image(native, np.eye(4))
    template_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    template_affine[:3, 3] = 8.0
    to_template = np.linalg.inv(np.eye(4)) @ template_affine
    template_data = ndimage.affine_transform(native, to_template, output_shape=(24, 24, 24), order=1)
    model_input = SOURCE.to_model(template_data)
    if np.ndim(residual) == 0:
        residual = residual * (model_input > -0.99)
    harmonized = apply_lookup(model_input, *lookup) + residual
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("native", "model_input", "harmonized")}
    nb.Nifti1Image(native, np.eye(4)).to_filename(paths["native"])
    nb.Nifti1Image(model_input, template_affine).to_filename(paths["model_input"])
    nb.Nifti1Image(harmonized.astype(np.float32), template_affine).to_filename(paths["harmonized"])
    transform = op.save_transform(sitk.AffineTransform(3), tmp_path / "xfm.txt")
    (tmp_path / "scale.json").write_text(json.dumps(SOURCE.as_dict()))
    table = {"inputs": lookup[0].tolist(), "outputs": lookup[1].tolist(), "denoised": denoised}
    (tmp_path / "lookup.json").write_text(json.dumps(table))
    masked = {}
    if native_mask is not None:
        nb.Nifti1Image(native_mask.astype(np.uint8), np.eye(4)).to_filename(tmp_path / "mask.nii.gz")
        masked = {"native_mask": str(tmp_path / "mask.nii.gz")}
    node = HarmonizedToNative(
        harmonized=str(paths["harmonized"]),
        model_input=str(paths["model_input"]),
        native=str(paths["native"]),
        lookup_file=str(tmp_path / "lookup.json"),
        transform=str(transform),
        source_scale=str(tmp_path / "scale.json"),
        target_lo=TARGET.lo,
        target_hi=TARGET.hi,
        **masked,
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


def test_a_denoised_translation_denoises_the_native_scan_inside_its_brain_mask(tmp_path):
    native = fine_scan()
    brain = native > 0
    identity = np.linspace(-1, 1, 33, dtype=np.float32)
    (tmp_path / "unmasked").mkdir()
    with pytest.raises(Exception, match="native_mask"):  # never the map without the denoising it was made for
        run_to_native(tmp_path / "unmasked", native, (identity, identity), 0.0, denoised=True)
    output = run_to_native(tmp_path, native, (identity, identity), 0.0, native_mask=brain, denoised=True)
    unclipped = 2.0 * (native - SOURCE.lo) / (SOURCE.hi - SOURCE.lo) - 1.0  # the scan's values, not clipped
    mapped = TARGET.to_scanner(unclipped)
    assert_denoised_alike(output, TARGET.to_scanner(denoise(unclipped, brain)), TARGET.hi - TARGET.lo, atol=0.5)
    np.testing.assert_allclose(output[~brain], mapped[~brain], rtol=1e-5)
    assert gradient_energy(output, brain) < 0.8 * gradient_energy(mapped, brain)


# ----------------------------------------------------------------------------- the methods text
TEMPLATE_FOV_MM = (8.0, 54.0)  # first and last template voxel centre, in native mm on each axis
RAMP_PER_MM = 0.005  # a residual rising along the first axis, in model-range units per mm


def methods_text(tmp_path, architecture: str, sites: list[dict] | None = None) -> str:
    bundle = tmp_path / "models" / "T1w"
    bundle.mkdir(parents=True)
    card = {"preset": "tiny", "network": {"architecture": architecture}, "sites": sites or [{"name": "siteA"}]}
    (bundle / "model.json").write_text(json.dumps(card))
    facts = MethodsFacts(("T1w",), "MNI152NLin2009cSym", 2, "scanner", (ModelUse("T1w", bundle, "siteA", "site"),))
    return " ".join(methods_markdown(facts).split())


def test_the_methods_text_names_the_sites_whose_images_were_denoised(tmp_path):
    sites = [{"name": "siteA", "noise_to_contrast": 0.1}, {"name": "siteB", "noise_to_contrast": 0.2}]
    text = methods_text(tmp_path / "noisy", "modulated", sites)
    assert "Images of siteB, whose noise-to-contrast ratio exceeded site siteA's" in text
    assert "[@manjon2010]" in text and "on the native grid alike" in text
    sites[1]["noise_to_contrast"] = 0.11  # not clearly noisier: nothing denoised, nothing said
    assert "denoised" not in methods_text(tmp_path / "quiet", "modulated", sites)


@pytest.mark.parametrize(
    ("architecture", "phrases"),
    [
        (
            "modulated",
            (
                "the voxel-wise part of the translation",
                "was applied to every voxel of the bias-corrected native image",
                "in the model range of the image's own intensity scale and unclipped",
                "the rest of the change on the template grid (the translated image minus the mapped input) was "
                "resampled onto the native grid (linear interpolation, zero outside the template's field of view) "
                "and added",
            ),
        ),
        (
            "paper",
            (
                "the change on the template grid (the translated image minus its input) was resampled onto the native "
                "grid (linear interpolation, zero outside the template's field of view) and added to the "
                "bias-corrected native image",
                "in the model range of the image's own intensity scale and unclipped",
            ),
        ),
    ],
)
def test_the_methods_text_says_how_the_change_reaches_the_scan(tmp_path, architecture, phrases):
    """Each key phrase is in the text, and HarmonizedToNative does what it says: the lookup on
    every native voxel (inside and outside the template's field of view, above the source
    scale's top too), plus the template-grid residual interpolated linearly inside the field of
    view and nothing outside it, on the target site's scale. The bias-corrected image is the
    one to_native receives (test_graph_build.py follows that connection back to N4)."""
    text = methods_text(tmp_path, architecture)
    assert all(phrase in text for phrase in phrases), [p for p in phrases if p not in text]
    assert "kept their own values" not in text and "site siteA's intensity scale" in text

    knots = np.linspace(-1, 1, 33, dtype=np.float32)
    # The paper layout's table is the identity (ModelBundle.intensity_lookup without a source style).
    lookup = (knots, np.sign(knots) * np.abs(knots) ** 0.7) if architecture == "modulated" else (knots, knots)
    native = 300.0 + fine_scan()  # the scan fills its box: neck and scalp beyond the template
    native[:4, 28:36, 28:36] = 1500.0  # above the source scale's top (1000), outside the template
    template_mm = TEMPLATE_FOV_MM[0] + 2.0 * np.arange(24, dtype=np.float32)
    ramp = np.broadcast_to(RAMP_PER_MM * (template_mm - TEMPLATE_FOV_MM[0])[:, None, None], (24, 24, 24))
    output = run_to_native(tmp_path, native, lookup, residual=np.ascontiguousarray(ramp, dtype=np.float32))

    own_scale = 2.0 * (native - SOURCE.lo) / (SOURCE.hi - SOURCE.lo) - 1.0  # unclipped: up to 2.0
    mapped = apply_lookup(own_scale, *lookup)
    mm = np.indices(NATIVE_SHAPE)
    inside = ((mm >= TEMPLATE_FOV_MM[0]) & (mm <= TEMPLATE_FOV_MM[1])).all(0)
    outside = ((mm <= TEMPLATE_FOV_MM[0] - 3) | (mm >= TEMPLATE_FOV_MM[1] + 3)).any(0)
    residual = RAMP_PER_MM * (mm[0] - TEMPLATE_FOV_MM[0])  # linear interpolation of the ramp is the ramp
    # 0.05 scanner units: a nearest-neighbour residual would be off by up to 5 here.
    np.testing.assert_allclose(output[inside], TARGET.to_scanner(mapped + residual)[inside], rtol=0, atol=0.05)
    np.testing.assert_allclose(output[outside], TARGET.to_scanner(mapped)[outside], rtol=0, atol=0.05)
    assert own_scale[outside].max() > 1.9  # the unclipped values were among those checked
