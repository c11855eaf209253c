"""The intensity normalisation shared by all QC metrics."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

ROBUST_PERCENTILES = (1.0, 99.0)


def robust_rescale(
    image: NDArray, mask: NDArray[np.bool_], percentiles: tuple[float, float] = ROBUST_PERCENTILES
) -> NDArray[np.float32]:
    """Map the `percentiles` of the intensities inside `mask` to 0 and 1 (affine, no clipping).

    Images of different scale and offset become comparable; what remains is contrast and shape
    of the intensity distribution, which is what harmonization has to fix.
    """
    low, high = np.percentile(image[mask], percentiles)
    if high <= low:
        raise ValueError("image is constant inside the mask; cannot rescale")
    return ((image - low) / (high - low)).astype(np.float32)
