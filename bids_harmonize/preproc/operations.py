"""Image operations of the preprocessing, each a plain function on nibabel images.

conform -> N4 bias correction -> affine registration to the template (rigid, then affine;
Mattes mutual information, multi-resolution, SimpleITK; brain to brain when a learned mask is
given, see brainmask.py) -> template brain mask carried back -> robust intensity scaling into the
model's [-1, 1] range, with the parameters kept so the result can be mapped back.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import SimpleITK as sitk

from bids_harmonize.preproc.itk import to_nibabel, to_sitk

LOGGER = logging.getLogger("bids_harmonize.preproc")


# ----------------------------------------------------------------------------- conform
def conform(img: nb.Nifti1Image) -> nb.Nifti1Image:
    """Reorient to the closest RAS+ axes, as float32; no resampling, so the grid is kept."""
    canonical = nb.as_closest_canonical(nb.squeeze_image(img))
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    out = nb.Nifti1Image(data, canonical.affine)
    out.set_qform(canonical.affine, code=1)
    out.set_sform(canonical.affine, code=1)
    return out


def _head_mask(image: sitk.Image) -> sitk.Image:
    """Foreground (head) by Otsu's threshold, largest component, holes filled."""
    mask = sitk.OtsuThreshold(image, 0, 1)
    mask = sitk.BinaryMorphologicalClosing(mask, [2, 2, 2])
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.BinaryFillhole(components == 1)


# ----------------------------------------------------------------------------- bias field
def n4_bias_correct(
    img: nb.Nifti1Image, working_spacing_mm: float = 4.0, iterations: tuple[int, ...] = (50, 50)
) -> tuple[nb.Nifti1Image, nb.Nifti1Image]:
    """N4 inside the head, fitted on a copy shrunk per axis to about ``working_spacing_mm``.

    The bias field is smooth, so it is fitted and evaluated on the coarse grid and brought to
    full resolution by linear interpolation: evaluating the B-spline at every voxel of a 1 mm
    head costs tens of seconds and changes nothing visible.
    """
    image = sitk.Maximum(to_sitk(img), 0.0)  # N4 works on the log of the image
    factors = [max(1, int(round(working_spacing_mm / s))) for s in image.GetSpacing()]
    small = sitk.Shrink(image, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(iterations))
    n4.Execute(small + 1.0, _head_mask(small))
    log_field = sitk.Resample(
        n4.GetLogBiasFieldAsImage(small),
        image,
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
        useNearestNeighborExtrapolator=True,
    )
    field = sitk.Exp(log_field)
    return to_nibabel(sitk.Divide(image, field)), to_nibabel(field)


# ----------------------------------------------------------------------------- registration
def itk_seed(seed: int) -> int:
    """A nonzero ITK random seed (0 means wall clock there) that is a pure function of ``seed``."""
    return seed % (2**31 - 2) + 1


def _registration(metric_bins: int = 32, sampling: float = 0.05, seed: int = 0) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=metric_bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads seed 0 as "seed from the wall clock" (sitkWallClock): shift every seed by one
    # so that --seed 0, the default, is as reproducible as any other.
    reg.SetMetricSamplingPercentage(sampling, itk_seed(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=100, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def plausible_affine(transform: sitk.AffineTransform, min_scale: float = 0.67, max_scale: float = 1.5) -> bool:
    """A head differs from the template by scaling within ~[0.67, 1.5] per axis, never a flip."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    scales = np.linalg.svd(matrix, compute_uv=False)
    return bool(np.linalg.det(matrix) > 0 and scales.min() >= min_scale and scales.max() <= max_scale)


def skull_strip(img: nb.Nifti1Image, mask: nb.Nifti1Image) -> sitk.Image:
    """The image with everything outside ``mask`` (same grid) set to zero, as a SimpleITK image."""
    data = np.asarray(img.dataobj, np.float32)
    keep = np.asarray(mask.dataobj) > 0
    if keep.shape != data.shape:
        raise ValueError(f"brain mask grid {keep.shape} differs from the image's {data.shape}")
    return to_sitk(nb.Nifti1Image(np.where(keep, data, 0.0).astype(np.float32), img.affine))


def register_affine(
    moving: nb.Nifti1Image,
    fixed: nb.Nifti1Image,
    seed: int = 0,
    moving_mask: nb.Nifti1Image | None = None,
    fixed_mask: nb.Nifti1Image | None = None,
) -> sitk.AffineTransform:
    """Moving (native) -> fixed (template) affine, as an ITK transform mapping fixed points to moving.

    With both masks (the image's brain mask and the template's) the registration is driven by
    the brain: the skull-stripped image is registered to the skull-stripped template, so scalp,
    neck and field of view do not pull the brain off the template's. Rigid first (initialised by
    image moments, which copes with large head displacements), then a 12-parameter affine
    started from the rigid result. An affine that leaves the range a head can take (thick-slice
    2D scans can drive it into a degenerate optimum) is refused and the rigid result is kept,
    with a warning.
    """
    if (moving_mask is None) != (fixed_mask is None):
        raise ValueError("brain-driven registration needs both masks (the image's and the template's)")
    if moving_mask is not None and fixed_mask is not None:
        fixed_image, moving_image = skull_strip(fixed, fixed_mask), skull_strip(moving, moving_mask)
    else:
        fixed_image, moving_image = to_sitk(fixed), to_sitk(moving)
    initial = sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    rigid_reg = _registration(seed=seed)
    rigid_reg.SetInitialTransform(initial, inPlace=False)
    rigid = rigid_reg.Execute(fixed_image, moving_image)
    if isinstance(rigid, sitk.CompositeTransform):
        rigid = rigid.GetBackTransform()
    euler = sitk.Euler3DTransform(rigid)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(euler.GetMatrix())
    affine.SetTranslation(euler.GetTranslation())
    affine.SetCenter(euler.GetCenter())
    rigid_only = sitk.AffineTransform(affine)
    affine_reg = _registration(seed=seed)
    affine_reg.SetShrinkFactorsPerLevel([2, 1])
    affine_reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    affine_reg.SetInitialTransform(affine, inPlace=True)
    affine_reg.Execute(fixed_image, moving_image)
    if plausible_affine(affine):
        return affine
    LOGGER.warning(
        "affine registration left the plausible range (scales %s); keeping the rigid result",
        np.round(np.linalg.svd(np.array(affine.GetMatrix()).reshape(3, 3), compute_uv=False), 2).tolist(),
    )
    return rigid_only


def resample(
    img: nb.Nifti1Image, reference: nb.Nifti1Image, transform: sitk.Transform, nearest: bool = False
) -> nb.Nifti1Image:
    """Resample ``img`` onto ``reference``'s grid; ``transform`` maps reference points to img points."""
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(to_sitk(img), to_sitk(reference), transform, interpolator, 0.0, sitk.sitkFloat32)
    return to_nibabel(out, np.uint8 if nearest else np.float32)


def save_transform(transform: sitk.Transform, path: Path) -> Path:
    sitk.WriteTransform(transform, str(path))
    return path


def load_transform(path: Path) -> sitk.Transform:
    return sitk.ReadTransform(str(path))


def inverse(transform: sitk.Transform) -> sitk.Transform:
    return transform.GetInverse()


# ----------------------------------------------------------------------------- intensities
@dataclass(frozen=True)
class IntensityScale:
    """Linear map between scanner intensities and the model range: lo -> -1, hi -> +1."""

    lo: float
    hi: float

    def to_model(self, data: np.ndarray) -> np.ndarray:
        scaled = 2.0 * (np.asarray(data, np.float32) - self.lo) / (self.hi - self.lo) - 1.0
        return np.clip(scaled, -1.0, 1.0)

    def to_scanner(self, data: np.ndarray) -> np.ndarray:
        return (np.asarray(data, np.float32) + 1.0) / 2.0 * (self.hi - self.lo) + self.lo

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def median_scale(scales: list[IntensityScale]) -> IntensityScale:
    """A site's typical scale: the median lo and hi of its images' scales."""
    return IntensityScale(float(np.median([s.lo for s in scales])), float(np.median([s.hi for s in scales])))


# The model's intensity convention (recorded in every model card's input contract).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


def intensity_convention() -> dict[str, object]:
    """How images are scaled for the model; a bundle trained otherwise is refused."""
    return {
        "convention": "robust_scale",
        "low_percentile": LOW_PERCENTILE,
        "high_percentile": HIGH_PERCENTILE,
        "range": [-1.0, 1.0],
        "background": -1.0,
    }


def robust_scale(
    data: np.ndarray, brain_mask: np.ndarray, low_pct: float = LOW_PERCENTILE, high_pct: float = HIGH_PERCENTILE
) -> IntensityScale:
    """lo: the low percentile of the whole volume (background); hi: a high percentile in the brain.

    Percentiles rather than min/max keep a few hot voxels from setting the scale.
    """
    brain = np.asarray(data)[np.asarray(brain_mask) > 0]
    if brain.size < 100:
        raise ValueError("the brain mask covers fewer than 100 voxels; registration probably failed")
    lo = float(np.percentile(data, low_pct))
    hi = float(np.percentile(brain, high_pct))
    if not hi > lo:
        raise ValueError(f"degenerate intensity range (lo={lo}, hi={hi})")
    return IntensityScale(lo, hi)


def restore_orientation(img: nb.Nifti1Image, raw: nb.Nifti1Image) -> nb.Nifti1Image:
    """Undo ``conform``'s reorientation: the result has exactly the raw image's shape and affine.

    Only axes are permuted and flipped (no interpolation), so voxel values are untouched.
    """
    data = np.asarray(img.dataobj)
    raw_ornt = nb.orientations.io_orientation(raw.affine)
    current = nb.orientations.io_orientation(img.affine)
    data = nb.orientations.apply_orientation(data, nb.orientations.ornt_transform(current, raw_ornt))
    raw_shape = nb.squeeze_image(raw).shape[:3]
    if data.shape != raw_shape:
        raise ValueError(f"cannot restore orientation: shape {data.shape} vs raw {raw_shape}")
    header = raw.header.copy()
    header.set_data_dtype(data.dtype)
    out = nb.Nifti1Image(data, raw.affine, header)
    out.set_qform(raw.affine, code=int(raw.header["qform_code"]) or 1)
    out.set_sform(raw.affine, code=int(raw.header["sform_code"]) or 1)
    return out
