"""Numbers the reports, the model card and the benchmarks share: registration agreement, the
rigid-fallback check, and brain intensity histograms (group training stores them per site in
the model card, so a report can draw the target site's training distribution without the
training images)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike, NDArray
from scipy.stats import spearmanr

# Spearman correlation of the registered image with the template inside the template brain
# mask: the report's registration flag before the learned mask (issue 20). It follows the
# scanner's contrast more than the mask (0.26-0.30 on the right mask of the realmix 2 mm Prisma
# MPRAGE; below 0.5 on most IXI heads), so reports now show it for information only, with
# --brain-mask template; benchmarks/brain_mask.py still measures its old flag rate.
POOR_AGREEMENT = 0.5
HISTOGRAM_BINS = 64
MODEL_RANGE = (-1.0, 1.0)

# A QC number is also judged against the image's own dataset: its robust z-score (median and
# MAD of the number over the run's images, MAD scaled by 1.4826 to a standard deviation under
# normality) beyond ROBUST_Z_LIMIT in the bad direction, once MIN_DATASET_IMAGES images have the
# number (below that the median and MAD are too unstable to judge by). 3.5 is Iglewicz and
# Hoaglin's cut-off for the modified z-score; docs/reports.md has the false-alarm rate on real heads.
ROBUST_Z_LIMIT = 3.5
MIN_DATASET_IMAGES = 8
MAD_TO_SD = 1.4826


def template_agreement(image: NDArray, template: NDArray, mask: NDArray[np.bool_]) -> float:
    """Rank correlation of image and template intensities inside the template brain mask.

    Rank-based, so a different intensity scale or a monotonic contrast change does not lower it;
    a brain displaced or scaled against the template does (its ventricles, white matter and
    cortex no longer sit on the template's)."""
    mask = np.asarray(mask, bool)
    values, reference = np.asarray(image)[mask], np.asarray(template)[mask]
    if values.size < 100 or np.ptp(values) == 0:
        return float("nan")
    return float(spearmanr(values, reference).statistic)


def robust_z(values: ArrayLike, reference: ArrayLike | None = None, min_scale: float = 0.0) -> NDArray[np.float64]:
    """(values - median) / (1.4826 MAD) of ``reference`` (``values`` itself when None; non-finite
    reference values are ignored). ``min_scale`` floors the scale, so that a dataset whose numbers
    barely vary (or are quantised, so that the MAD is 0) does not turn irrelevant differences into
    large z; with a scale of 0 the result is NaN."""
    values = np.asarray(values, np.float64)
    reference = np.asarray(values if reference is None else reference, np.float64).ravel()
    reference = reference[np.isfinite(reference)]
    if reference.size == 0:
        return np.full(values.shape, np.nan)
    median = np.median(reference)
    scale = max(MAD_TO_SD * float(np.median(np.abs(reference - median))), min_scale)
    if scale <= 0:
        return np.full(values.shape, np.nan)
    return (values - median) / scale


@dataclass(frozen=True)
class DatasetOutlier:
    """One image's QC number against its dataset's distribution of it."""

    value: float
    z: float
    median: float
    images: int  # how many images of the dataset have the number (the image included)
    flagged: bool


def dataset_outlier(
    value: float,
    reference: Sequence[float],
    *,
    bad: str = "low",
    min_scale: float = 0.0,
    limit: float = ROBUST_Z_LIMIT,
    min_images: int = MIN_DATASET_IMAGES,
) -> DatasetOutlier | None:
    """Flag ``value`` when its robust z-score against ``reference`` (the dataset's values, this
    image's included) lies beyond ``limit`` on the ``bad`` side ("low", "high" or "both"); None
    when fewer than ``min_images`` finite reference values exist (too few to judge by)."""
    if bad not in ("low", "high", "both"):
        raise ValueError(f"bad must be 'low', 'high' or 'both', not {bad!r}")
    finite = np.asarray(reference, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < min_images or not np.isfinite(value):
        return None
    z = float(robust_z(value, finite, min_scale))
    beyond = {"low": -z > limit, "high": z > limit, "both": abs(z) > limit}[bad]
    return DatasetOutlier(float(value), z, float(np.median(finite)), int(finite.size), bool(np.isfinite(z) and beyond))


def transform_scales(transform_file: Path) -> list[float]:
    """Singular values of the linear part of the registration (1, 1, 1 for a rigid transform)."""
    transform = sitk.ReadTransform(str(transform_file))
    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetNthTransform(transform.GetNumberOfTransforms() - 1)
    matrix = np.array(sitk.AffineTransform(transform).GetMatrix()).reshape(3, 3)
    return [float(s) for s in np.linalg.svd(matrix, compute_uv=False)]


def fell_back_to_rigid(transform_file: Path, tolerance: float = 1e-6) -> bool:
    """True when preprocessing kept the rigid result (its affine step left the plausible range):
    an optimised 12-parameter affine never has exactly unit scales."""
    return bool(np.allclose(transform_scales(transform_file), 1.0, atol=tolerance))


def histogram(values: NDArray, value_range: tuple[float, float], bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
    """Density histogram as plain lists: {"edges": [...], "density": [...]}."""
    density, edges = np.histogram(np.asarray(values, np.float64), bins=bins, range=value_range, density=True)
    return {"edges": [float(e) for e in edges], "density": [float(d) for d in np.nan_to_num(density)]}


def brain_counts(volume: NDArray, mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Histogram counts of one model-range volume's brain voxels (the group level stores them
    with each training volume, so a site's histogram needs no second pass over its images)."""
    return np.histogram(np.asarray(volume)[np.asarray(mask, bool)], bins=HISTOGRAM_BINS, range=MODEL_RANGE)[0]


def training_histogram(counts: list[NDArray]) -> dict[str, Any]:
    """The brain intensity distribution of a site's training volumes, in the model range
    [-1, 1], from their `brain_counts` (what the group level stores in the model card, per site)."""
    total = np.sum(counts, axis=0).astype(np.float64)
    edges = np.linspace(*MODEL_RANGE, HISTOGRAM_BINS + 1)
    density = total / max(total.sum(), 1.0) / np.diff(edges)
    return {"space": "model range [-1, 1]", "edges": edges.tolist(), "density": density.tolist()}


def to_scanner_units(hist: dict[str, Any], scale: dict[str, float]) -> dict[str, list[float]]:
    """Map a model-range histogram onto a site's scanner units (lo -> -1, hi -> +1)."""
    lo, hi = float(scale["lo"]), float(scale["hi"])
    edges = (np.asarray(hist["edges"]) + 1.0) / 2.0 * (hi - lo) + lo
    density = np.asarray(hist["density"]) * 2.0 / (hi - lo)  # densities follow the change of variable
    return {"edges": edges.tolist(), "density": density.tolist()}


# The mask check's numbers in the mask sidecar (preproc/brainmask.py: MaskCheck.as_dict), the
# side on which each is bad, and the scale floor of its robust z: differences too small to
# matter (Dice 0.005; a quarter of a 2 mm voxel, the outline distance being quantised in steps
# of about 0.45 mm on the 2 mm grid) are never more than one unit of z.
MASK_CHECK_NUMBERS = {
    "TemplateMaskDice": ("Dice", "low", 0.005),
    "BoundaryDistance95mm": ("outline distance (mm)", "high", 0.5),
}


def mask_check_outliers(check: dict[str, Any], dataset: Sequence[dict[str, Any]]) -> dict[str, DatasetOutlier]:
    """The mask check's numbers of one image against the dataset's (``dataset``: the MaskCheck
    records of the run's images, this one included). Empty when too few images have them."""
    result = {}
    for key, (_, bad, floor) in MASK_CHECK_NUMBERS.items():
        if key not in check:
            continue
        reference = [float(other[key]) for other in dataset if isinstance(other.get(key), (int, float))]
        outlier = dataset_outlier(float(check[key]), reference, bad=bad, min_scale=floor)
        if outlier is not None:
            result[key] = outlier
    return result
