"""How much site signature is left in a set of images: a site classifier and histogram distances."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import NDArray
from scipy.stats import wasserstein_distance
from skimage.feature import graycomatrix, graycoprops
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bids_harmonize.qc.intensity import robust_rescale

HISTOGRAM_BINS = 32
GRAY_LEVELS = 32
GLCM_DISTANCES = (1, 2)
GLCM_ANGLES = (0.0, np.pi / 2)
GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
MIN_SLICE_FRACTION = 0.25  # of the largest axial brain cross-section


@dataclass(frozen=True)
class SiteClassification:
    """Cross-validated accuracy of predicting the site from image features (per axial slice)."""

    accuracy: float
    chance: float
    n_images: int
    n_samples: int


def _slice_features(slice_: NDArray, inside: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Intensity histogram and GLCM texture of one axial slice (intensities already rescaled)."""
    values = np.clip(slice_[inside], 0.0, 1.0)
    histogram, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0), density=True)
    # Levels 1..GRAY_LEVELS inside the brain, 0 outside; background pairs are dropped below.
    levels = np.zeros(slice_.shape, dtype=np.uint8)
    levels[inside] = 1 + np.minimum((values * GRAY_LEVELS).astype(np.uint8), GRAY_LEVELS - 1)
    cooccurrence = graycomatrix(levels, GLCM_DISTANCES, GLCM_ANGLES, levels=GRAY_LEVELS + 1)[1:, 1:]
    cooccurrence = cooccurrence / np.maximum(cooccurrence.sum(axis=(0, 1), keepdims=True), 1)
    texture = [graycoprops(cooccurrence, name).ravel() for name in GLCM_PROPERTIES]
    return np.concatenate([histogram, *texture])


def site_features(image: NDArray, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """One feature row per axial slice with enough brain: histogram + GLCM of the robustly
    rescaled image (so a global intensity scale alone cannot identify the site)."""
    mask = mask.astype(bool)
    rescaled = robust_rescale(image, mask)
    areas = mask.sum(axis=(0, 1))
    slices = np.flatnonzero(areas >= MIN_SLICE_FRACTION * areas.max())
    return np.stack([_slice_features(rescaled[:, :, z], mask[:, :, z]) for z in slices])


def site_classifier_accuracy(
    images: Sequence[NDArray],
    masks: Sequence[NDArray],
    sites: Sequence[str],
    *,
    max_splits: int = 5,
    seed: int = 0,
) -> SiteClassification:
    """Accuracy of a linear classifier (standardised features, logistic regression) predicting
    each slice's site, cross-validated so that all slices of an image fall in the same fold.

    Chance is the majority-class fraction of slices (1 / n_sites when balanced). Near chance
    means no site signature left; clearly above means the site is still recognisable.
    """
    images_per_site = np.unique(np.asarray(sites), return_counts=True)[1]
    if len(images_per_site) < 2 or images_per_site.min() < 2:
        raise ValueError("need at least two sites with at least two images each")
    features, labels, groups = [], [], []
    for index, (image, mask, site) in enumerate(zip(images, masks, sites, strict=True)):
        rows = site_features(image, mask)
        features.append(rows)
        labels += [site] * len(rows)
        groups += [index] * len(rows)
    labels = np.asarray(labels)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedGroupKFold(n_splits=min(max_splits, int(images_per_site.min())), shuffle=True, random_state=seed)
    scores = cross_val_score(classifier, np.concatenate(features), labels, groups=groups, cv=folds)
    chance = np.unique(labels, return_counts=True)[1].max() / len(labels)
    return SiteClassification(float(scores.mean()), float(chance), len(images), len(labels))


def between_site_wasserstein(
    images: Sequence[NDArray], masks: Sequence[NDArray], sites: Sequence[str], *, normalize: bool = True
) -> float:
    """Mean over site pairs of the 1-D Wasserstein distance between the sites' pooled
    within-mask intensity distributions (each image robustly rescaled first when `normalize`)."""
    pooled: dict[str, list[NDArray]] = {}
    for image, mask, site in zip(images, masks, sites, strict=True):
        mask = mask.astype(bool)
        values = robust_rescale(image, mask)[mask] if normalize else image[mask]
        pooled.setdefault(site, []).append(values)
    distributions = {site: np.concatenate(values) for site, values in pooled.items()}
    if len(distributions) < 2:
        raise ValueError("need images from at least two sites")
    pairs = combinations(sorted(distributions), 2)
    return float(np.mean([wasserstein_distance(distributions[a], distributions[b]) for a, b in pairs]))
