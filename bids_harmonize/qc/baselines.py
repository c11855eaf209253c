"""Baseline harmonizers: what a user would otherwise pick instead of MURD.

Intensity standardisation methods come from the `intensity-normalization` package (z-score,
WhiteStripe, Nyul), histogram matching from scikit-image. Each baseline maps an image (with its
brain mask) to a new image; `baseline_harmonizers` fits them on training images and returns
them behind the common `Harmonizer` signature that the benchmark scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from intensity_normalization import (
    Modality,
    NyulNormalizer,
    WhiteStripeNormalizer,
    ZScoreNormalizer,
    create_image,
)
from numpy.typing import NDArray
from skimage.exposure import match_histograms

# (image, brain mask, source site label) -> image in the target site's style.
Harmonizer = Callable[[NDArray, NDArray, str], NDArray]
_MODALITY = {"T1w": Modality.T1, "T2w": Modality.T2}


def no_harmonization(image: NDArray, mask: NDArray) -> NDArray[np.float32]:
    return image.astype(np.float32)


def zscore(image: NDArray, mask: NDArray) -> NDArray[np.float32]:
    """(image - mean) / std of the intensities inside the brain mask."""
    normalizer = ZScoreNormalizer()
    return normalizer.fit_transform(create_image(image), create_image(mask)).get_data()


def whitestripe(image: NDArray, mask: NDArray, contrast: str = "T1w") -> NDArray[np.float32]:
    """WhiteStripe (Shinohara et al. 2014): z-score against the normal-appearing WM "stripe"
    (+-5% in quantile around the WM histogram peak: the last peak on T1w, the largest on T2w)."""
    normalizer = WhiteStripeNormalizer(modality=_MODALITY[contrast])
    return normalizer.fit_transform(create_image(image), create_image(mask)).get_data()


def match_histogram(image: NDArray, mask: NDArray, reference_values: NDArray) -> NDArray[np.float32]:
    """Map the brain intensities so that their histogram equals that of `reference_values`
    (e.g. the pooled brain intensities of the target site). Outside the mask the result is 0:
    the mapping is defined for brain intensities only."""
    mask = mask.astype(bool)
    matched = np.zeros(image.shape, dtype=np.float32)
    matched[mask] = match_histograms(image[mask], reference_values)
    return matched


def pooled_brain_values(images: Sequence[NDArray], masks: Sequence[NDArray]) -> NDArray:
    return np.concatenate([image[mask.astype(bool)] for image, mask in zip(images, masks, strict=True)])


def fit_nyul(images: Sequence[NDArray], masks: Sequence[NDArray]) -> NyulNormalizer:
    """Nyul & Udupa (2000) standard scale: mean percentile landmarks (1, 10, ..., 90, 99) of the
    training images, each first mapped linearly from its 1st-99th percentile to 1-100."""
    normalizer = NyulNormalizer()
    normalizer.fit_population([create_image(i) for i in images], [create_image(m) for m in masks])
    return normalizer


def nyul(image: NDArray, mask: NDArray, standard_scale: NyulNormalizer) -> NDArray[np.float32]:
    """Piecewise-linear map of the image's own landmarks onto the standard scale."""
    return standard_scale.transform(create_image(image), create_image(mask)).get_data()


QUANTILE_LEVELS = np.linspace(1.0, 99.0, 99)


def site_quantiles(images: Sequence[NDArray], masks: Sequence[NDArray]) -> NDArray:
    """One site's pooled brain quantiles (1st-99th percentile), each image first put in the
    model range by its own robust scale (preproc.operations.robust_scale), as MURD's inputs are."""

    values = [_model_brain_values(image, mask) for image, mask in zip(images, masks, strict=True)]
    return np.percentile(np.concatenate(values), QUANTILE_LEVELS)


def _model_brain_values(image: NDArray, mask: NDArray) -> NDArray:
    """The brain voxels of ``image`` in the model range, scaled as MURD's inputs are."""
    from bids_harmonize.preproc.operations import robust_scale

    return robust_scale(image, mask).to_model(image)[mask.astype(bool)]


def site_quantile_map(
    image: NDArray, mask: NDArray, source: NDArray, target: NDArray, target_scale
) -> NDArray[np.float32]:
    """One curve per *site*: the image in the model range, mapped from its site's pooled
    quantiles onto the target site's, into the target site's intensity scale. Unlike Nyul or
    histogram matching (one curve per image), subjects keep their own tissue proportions. It is
    what MURD's site curve anchors alone do (model/anchors.py), without any network."""
    from bids_harmonize.model.curves import apply_lookup
    from bids_harmonize.preproc.operations import robust_scale

    model_input = robust_scale(image, mask).to_model(image)
    inputs = np.concatenate([[-1.0], source, [1.0]]).astype(np.float32)
    outputs = np.concatenate([[-1.0], target, [1.0]]).astype(np.float32)
    inputs, outputs = np.maximum.accumulate(inputs), np.maximum.accumulate(outputs)
    return target_scale.to_scanner(apply_lookup(model_input, inputs, outputs))


def image_quantile_shift(
    image: NDArray, mask: NDArray, source: NDArray, target: NDArray, target_scale
) -> NDArray[np.float32]:
    """One curve per *image*, from the site model: the image's own brain quantiles (model range)
    moved by the site difference at each quantile level, target - source, so each subject keeps
    its deviation from its site (anatomy and its own tissue contrast) and loses only the site's.
    It is MURD's voxel-wise map (model.anchors.image_lookup) without any network."""
    from bids_harmonize.model.anchors import image_lookup
    from bids_harmonize.model.curves import apply_lookup
    from bids_harmonize.preproc.operations import robust_scale

    model_input = robust_scale(image, mask).to_model(image)
    return target_scale.to_scanner(apply_lookup(model_input, *image_lookup(model_input, mask, source, target)))


def baseline_harmonizers(
    train_images: Sequence[NDArray],
    train_masks: Sequence[NDArray],
    train_sites: Sequence[str],
    target_site: str,
    contrast: str = "T1w",
    covariates: dict[str, list[float]] | None = None,
) -> dict[str, Harmonizer]:
    """Every baseline, fitted on the training images, as a `Harmonizer`.

    "Nyul (target site)" learns the standard scale from the target site's training images only.
    That equals the classic all-site standard scale followed by a map onto the target site's
    landmarks (two piecewise-linear maps with the same knots compose to one), so it is the Nyul
    variant that harmonizes *to the target*; "Nyul (all sites)" is the classic method.
    With `covariates` (column -> one value per training image), "site quantile map, covariate-
    adjusted" maps between every site's quantiles at the same covariate values, as MURD's site
    anchors do with covariates (model.anchors.adjusted_site_quantiles).
    """
    at_target = [index for index, site in enumerate(train_sites) if site == target_site]
    if not at_target:
        raise ValueError(f"no training image from the target site {target_site}")
    target_images = [train_images[i] for i in at_target]
    target_masks = [train_masks[i] for i in at_target]
    reference_values = pooled_brain_values(target_images, target_masks)
    all_sites_scale = fit_nyul(train_images, train_masks)
    target_scale = fit_nyul(target_images, target_masks)
    quantiles = {
        site: site_quantiles(*zip(*[(i, m) for i, m, s in zip(train_images, train_masks, train_sites) if s == site]))
        for site in set(train_sites)
    }
    target_units = _median_scale(target_images, target_masks)
    harmonizers: dict[str, Harmonizer] = {
        "none": lambda image, mask, source: no_harmonization(image, mask),
        "z-score": lambda image, mask, source: zscore(image, mask),
        "WhiteStripe": lambda image, mask, source: whitestripe(image, mask, contrast),
        "histogram matching": lambda image, mask, source: match_histogram(image, mask, reference_values),
        "Nyul (all sites)": lambda image, mask, source: nyul(image, mask, all_sites_scale),
        "Nyul (target site)": lambda image, mask, source: nyul(image, mask, target_scale),
        "site quantile map": lambda image, mask, source: site_quantile_map(
            image, mask, quantiles[source], quantiles[target_site], target_units
        ),
    }
    if covariates:
        adjusted = _adjusted_quantiles(train_images, train_masks, train_sites, covariates)
        harmonizers["site quantile map, covariate-adjusted"] = lambda image, mask, source: site_quantile_map(
            image, mask, adjusted[source], adjusted[target_site], target_units
        )
        harmonizers["image quantile shift, covariate-adjusted"] = lambda image, mask, source: image_quantile_shift(
            image, mask, adjusted[source], adjusted[target_site], target_units
        )
    return harmonizers


def _adjusted_quantiles(
    images: Sequence[NDArray], masks: Sequence[NDArray], sites: Sequence[str], covariates: dict[str, list[float]]
) -> dict[str, NDArray]:
    per_image = [
        np.percentile(_model_brain_values(image, mask), QUANTILE_LEVELS)
        for image, mask in zip(images, masks, strict=True)
    ]
    return adjusted_site_anchors(np.array(per_image), sites, covariates)


def adjusted_site_anchors(
    per_image: NDArray, sites: Sequence[str], covariates: dict[str, list[float]]
) -> dict[str, NDArray]:
    """Site name -> its quantiles at the images' mean covariates (model.anchors.
    adjusted_site_quantiles), from each image's quantiles (images x levels, model range)."""
    import torch

    from bids_harmonize.model.anchors import adjusted_site_quantiles, covariate_matrix

    names = sorted(set(sites))
    quantiles, _ = adjusted_site_quantiles(
        torch.tensor(np.asarray(per_image, np.float64)),
        torch.tensor([names.index(site) for site in sites]),
        covariate_matrix(covariates, len(sites)),
        len(names),
    )
    return {site: quantiles[k].numpy() for k, site in enumerate(names)}


def _median_scale(images: Sequence[NDArray], masks: Sequence[NDArray]):
    from bids_harmonize.preproc.operations import median_scale, robust_scale

    return median_scale([robust_scale(image, mask) for image, mask in zip(images, masks, strict=True)])
