"""Numbers the reports, the model card and the benchmarks share: registration agreement, the
rigid-fallback check, and brain intensity histograms (group training stores them per site in
the model card, so a report can draw the target site's training distribution without the
training images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy.stats import spearmanr

# Spearman correlation of the registered image with the template inside the template brain
# mask: the report's registration flag before the learned mask (issue 20). It follows the
# scanner's contrast more than the mask (0.26-0.30 on the right mask of the realmix 2 mm Prisma
# MPRAGE; below 0.5 on most IXI heads), so reports now show it for information only, with
# --brain-mask template; benchmarks/brain_mask.py still measures its old flag rate.
POOR_AGREEMENT = 0.5
HISTOGRAM_BINS = 64
MODEL_RANGE = (-1.0, 1.0)


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
