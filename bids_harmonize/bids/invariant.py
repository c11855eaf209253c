"""The output invariant: every image bids_harmonize writes holds finite values only, and a
harmonized image lies within a range derived from its target site's intensity scale.

The target scale (lo, hi) is the one the model range [-1, 1] maps onto (lo: the low percentile
of the target site's whole volumes, hi: the high percentile inside their brains). Harmonized
values may leave [lo, hi] legitimately: fat and vessels are brighter than the brain's 99.5th
percentile, and noise dips below the background's percentile. So the allowed range is the
model range widened to [-1.5, 3.0], in scanner units

    [lo - 0.25 * (hi - lo),  hi + 1.0 * (hi - lo)].

Decision: finite values outside it are **clipped** to it (the lookup's extended end segments
and the unbounded residual are what put them there, not anatomy) and the sidecar says so
(``OutputRange``: bounds, policy, number of clipped voxels). A non-finite value anywhere, or
clipping of more than ``MAX_CLIPPED_SHARE`` of the voxels (a model that renders most of the
image outside any plausible range), is refused: ``OutputInvariantError`` names the image and
the bundle, and nothing of that image is written.

This module is the one place the invariant lives; the sink (``interfaces/bids.py``) applies it to every
image of a participant before any is written, and ``derivatives.write_image`` checks finiteness
once more on the way to disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bids_harmonize.errors import ExitCode, HarmonizeError

# Allowed harmonized values, in model units (the model range is [-1, 1]).
MODEL_UNITS_RANGE = (-1.5, 3.0)
# More clipped voxels than this share means the output is not an image of the target site.
MAX_CLIPPED_SHARE = 0.05
POLICY = "clip"


class OutputInvariantError(HarmonizeError, RuntimeError):
    """An image about to be written breaks the output invariant; nothing of it is written."""

    exit_code = ExitCode.FAILURE


@dataclass(frozen=True)
class OutputRange:
    lo: float
    hi: float

    @classmethod
    def for_target(cls, lo: float, hi: float) -> OutputRange:
        """The allowed range of images harmonized to the target scale (lo, hi)."""
        span = float(hi) - float(lo)
        low, high = ((m + 1.0) / 2.0 * span + float(lo) for m in MODEL_UNITS_RANGE)
        return cls(low, high)

    def record(self, clipped: int) -> dict[str, Any]:
        """The sidecar's ``OutputRange`` entry."""
        return {
            "Min": self.lo,
            "Max": self.hi,
            "Policy": POLICY,
            "ClippedVoxels": int(clipped),
            "Description": "harmonized values outside [Min, Max] were clipped to it (bids_harmonize "
            "output invariant: the model range [-1, 1] widened to [-1.5, 3] of the target scale)",
        }


def _fix(bundle: str | None) -> str:
    if bundle:
        return (
            f"Fix: the model bundle {bundle} renders this image implausibly; check its model.json "
            "(intensity scales, style codes) or retrain it at group level"
        )
    return "Fix: check the input image; convert it again from the source data"


def enforce(
    data: np.ndarray, *, image: str, bundle: str | None = None, bounds: OutputRange | None = None
) -> tuple[np.ndarray, int]:
    """``data`` made to satisfy the invariant, and how many voxels were clipped.

    Raises OutputInvariantError naming ``image`` (and ``bundle``) for non-finite values, or
    when more than MAX_CLIPPED_SHARE of the voxels lie outside ``bounds``.
    """
    values = np.asarray(data)
    bad = int(values.size - np.count_nonzero(np.isfinite(values))) if values.dtype.kind == "f" else 0
    if bad:
        source = f" harmonized with the model bundle {bundle}" if bundle else ""
        raise OutputInvariantError(
            f"{image}{source}: {bad} voxel(s) are NaN or infinite; nothing was written for this image. {_fix(bundle)}"
        )
    if bounds is None:
        return values, 0
    outside = int(np.count_nonzero((values < bounds.lo) | (values > bounds.hi)))
    if outside > MAX_CLIPPED_SHARE * values.size:
        raise OutputInvariantError(
            f"{image} harmonized with the model bundle {bundle}: {outside} of {values.size} voxels lie outside the "
            f"output range [{bounds.lo:g}, {bounds.hi:g}] derived from the target scale (more than "
            f"{MAX_CLIPPED_SHARE:.0%}); nothing was written for this image. {_fix(bundle)}"
        )
    if outside:
        values = np.clip(values, bounds.lo, bounds.hi).astype(values.dtype, copy=False)
    return values, outside


def check_finite(img: Any, image: str) -> None:
    """Raise OutputInvariantError unless the nibabel image ``img`` holds finite values only."""
    enforce(np.asanyarray(img.dataobj), image=image)
