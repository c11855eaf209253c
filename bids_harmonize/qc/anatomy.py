"""Anatomy preservation: segment the (harmonized) image and compare with the true tissue labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import f1_score
from sklearn.mixture import GaussianMixture

TISSUE_LABELS = {"CSF": 1, "GM": 2, "WM": 3}
# Tissue order from dark to bright.
INTENSITY_ORDER = {"T1w": ("CSF", "GM", "WM"), "T2w": ("WM", "GM", "CSF")}
MAX_FIT_VOXELS = 100_000  # the mixture is fitted on a random subset, then labels every voxel


@dataclass(frozen=True)
class AnatomyScores:
    """Dice overlap and relative volume error ((found - true) / true) per tissue."""

    dice: dict[str, float]
    relative_volume_error: dict[str, float]

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values())))

    @property
    def mean_absolute_volume_error(self) -> float:
        return float(np.mean(np.abs(list(self.relative_volume_error.values()))))


def segment_tissues(image: NDArray, mask: NDArray[np.bool_], contrast: str = "T1w", seed: int = 0) -> NDArray[np.uint8]:
    """Three-class Gaussian mixture on the intensities inside `mask`; classes named by their
    mean intensity in the order the contrast implies. Labels: 0 outside, 1 CSF, 2 GM, 3 WM.

    The classes share one variance ("tied"): with free variances the broad partial-volume
    CSF/GM mixture swallows much of the GM on strongly T1-weighted images."""
    mask = mask.astype(bool)
    values = image[mask].astype(np.float64).reshape(-1, 1)
    rng = np.random.default_rng(seed)
    subset = values[rng.permutation(len(values))[:MAX_FIT_VOXELS]]
    mixture = GaussianMixture(n_components=3, covariance_type="tied", random_state=seed).fit(subset)
    dark_to_bright = np.argsort(mixture.means_.ravel())
    component_label = np.empty(3, dtype=np.uint8)
    for component, tissue in zip(dark_to_bright, INTENSITY_ORDER[contrast], strict=True):
        component_label[component] = TISSUE_LABELS[tissue]
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[mask] = component_label[mixture.predict(values)]
    return labels


def compare_labels(labels: NDArray, truth: NDArray, mask: NDArray[np.bool_]) -> AnatomyScores:
    """Dice (= F1 of the per-voxel labels) and relative volume error of each tissue in `mask`."""
    mask = mask.astype(bool)
    found, true = labels[mask], truth[mask]
    codes = list(TISSUE_LABELS.values())
    dice = f1_score(true, found, labels=codes, average=None, zero_division=0.0)
    found_volume = np.array([(found == code).sum() for code in codes])
    true_volume = np.array([(true == code).sum() for code in codes])
    volume_error = (found_volume - true_volume) / np.maximum(true_volume, 1)
    names = list(TISSUE_LABELS)
    return AnatomyScores(
        dice={name: float(d) for name, d in zip(names, dice, strict=True)},
        relative_volume_error={name: float(e) for name, e in zip(names, volume_error, strict=True)},
    )


def anatomy_preservation(
    image: NDArray, mask: NDArray[np.bool_], truth: NDArray, contrast: str = "T1w", seed: int = 0
) -> AnatomyScores:
    """Segment `image` (GMM) and compare with the true labels `truth` (dseg) inside `mask`."""
    return compare_labels(segment_tissues(image, mask, contrast, seed), truth, mask)
