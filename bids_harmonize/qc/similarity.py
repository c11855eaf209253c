"""Image similarity against a ground truth, inside a brain mask: SSIM, PSNR, MAE."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import mean_absolute_error

from bids_harmonize.qc.intensity import robust_rescale

SSIM_SIGMA = 1.5  # Gaussian window of Wang et al. (2004)


@dataclass(frozen=True)
class SimilarityScores:
    ssim: float
    psnr: float
    mae: float


def _comparable(
    image: NDArray, reference: NDArray, mask: NDArray[np.bool_], normalize: bool
) -> tuple[NDArray, NDArray, float]:
    """Both images on one scale, and the data range that PSNR and SSIM use."""
    if normalize:
        return robust_rescale(image, mask), robust_rescale(reference, mask), 1.0
    inside = reference[mask]
    return image.astype(np.float64), reference.astype(np.float64), float(inside.max() - inside.min())


def ssim_in_mask(image: NDArray, reference: NDArray, mask: NDArray[np.bool_], data_range: float) -> float:
    """Mean of the local SSIM map over the mask (Gaussian window, sigma 1.5 voxels).

    Outside the mask both images are set to 0, so windows at the brain edge compare brain with
    the same empty surround and the background does not count."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    image_box = np.where(mask[box], image[box], 0.0)
    reference_box = np.where(mask[box], reference[box], 0.0)
    _, ssim_map = structural_similarity(
        reference_box,
        image_box,
        data_range=data_range,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        full=True,
    )
    return float(ssim_map[mask[box]].mean())


def psnr_in_mask(image: NDArray, reference: NDArray, mask: NDArray[np.bool_], data_range: float) -> float:
    """PSNR in dB over the mask voxels; inf for identical images."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(reference[mask], image[mask], data_range=data_range))


def mae_in_mask(image: NDArray, reference: NDArray, mask: NDArray[np.bool_]) -> float:
    return float(mean_absolute_error(reference[mask], image[mask]))


def similarity(
    image: NDArray, reference: NDArray, mask: NDArray[np.bool_], *, normalize: bool = True
) -> SimilarityScores:
    """SSIM, PSNR and MAE of `image` against `reference` inside `mask`.

    With `normalize` (the default) both images are first mapped by `robust_rescale` (their own
    1st/99th percentiles in the mask to 0/1), so the scores ignore a global affine intensity change
    and data_range is 1. Without it, raw intensities are compared and data_range is the
    reference's range inside the mask.
    """
    mask = mask.astype(bool)
    image, reference, data_range = _comparable(image, reference, mask, normalize)
    return SimilarityScores(
        ssim=ssim_in_mask(image, reference, mask, data_range),
        psnr=psnr_in_mask(image, reference, mask, data_range),
        mae=mae_in_mask(image, reference, mask),
    )
