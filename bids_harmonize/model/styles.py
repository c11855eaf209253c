"""What a bundle stores per site besides its anchors: each site's mean style code, with the curve
head calibrated so those styles render exactly the site anchors (training ends with this, and
validation.py scores every snapshot through it, so what is validated is what the bundle would
be); and each site's noise, for noise matching (preproc/noise.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bids_harmonize.model.anchors import QUANTILE_LEVELS, calibrate_curve_head
from bids_harmonize.model.data import SliceSampler
from bids_harmonize.model.infer import mean_style
from bids_harmonize.model.networks import Translator
from bids_harmonize.preproc.noise import denoise, noise_to_contrast, should_denoise

# Volumes per site (evenly spaced) that measure its noise and its denoised quantiles: a median
# and a mean, which a dozen images settle, at a bounded cost on large studies.
NOISE_VOLUMES_PER_SITE = 12


def compute_site_styles(translator: Translator, sampler: SliceSampler, slices_per_site: int, batch_size: int) -> Tensor:
    """Deterministic style per site: the mean style code of up to `slices_per_site` of its
    training slices, evenly spaced over its usable slices, read by the (EMA) style encoder."""
    styles = []
    for site in range(translator.config.num_sites):
        volume_index, centre = sampler.site_positions(site)
        chosen = torch.linspace(0, len(centre) - 1, min(slices_per_site, len(centre)), device=centre.device)
        chosen = chosen.round().long()
        batches = (sampler.stacks(volume_index[chunk], centre[chunk]) for chunk in chosen.split(batch_size))
        styles.append(mean_style(translator, batches, site))
    return torch.stack(styles)


def bundle_styles(
    translator: Translator, sampler: SliceSampler, anchors: Tensor | None, slices_per_site: int, batch_size: int
) -> Tensor:
    """The site styles, and (with anchors) the translator's curve head calibrated to them in place."""
    styles = compute_site_styles(translator, sampler, slices_per_site, batch_size)
    if anchors is not None:
        calibrate_curve_head(translator.generator, styles, anchors)
    return styles


def site_noise(sampler: SliceSampler, brain_mask: Tensor, site_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per site, what the bundle's card keeps: `noise_to_contrast` (the median over up to
    NOISE_VOLUMES_PER_SITE of its training volumes) and, for a site noisier than the quietest by
    NOISIER (one that can be a denoised source), `denoised_shift`: the mean change denoising
    brings to those volumes' brain quantiles at the anchor levels, which moves its anchor
    quantiles to denoised images'. brain_mask (slices first) is on the volumes' grid."""
    mask = brain_mask.cpu().numpy().astype(bool)
    labels = sampler.site_labels.cpu().numpy()
    chosen = {site: _evenly_spaced(np.flatnonzero(labels == index)) for index, site in enumerate(site_names)}
    ratios = {
        site: float(np.median([noise_to_contrast(_whole(sampler, v), mask) for v in rows]))
        for site, rows in chosen.items()
    }
    record: dict[str, dict[str, Any]] = {site: {"noise_to_contrast": ratio} for site, ratio in ratios.items()}
    levels = QUANTILE_LEVELS.numpy()
    for site, rows in chosen.items():
        if should_denoise(ratios[site], min(ratios.values())):
            shifts = []
            for v in rows:
                volume = _whole(sampler, v)
                shifts.append(np.quantile(denoise(volume, mask)[mask], levels) - np.quantile(volume[mask], levels))
            # Rounded: ITK's threads leave the denoiser's last bits to summation order.
            record[site]["denoised_shift"] = np.round(np.mean(shifts, axis=0), 6).tolist()
    return record


def _evenly_spaced(rows: np.ndarray) -> np.ndarray:
    return rows[np.linspace(0, len(rows) - 1, min(NOISE_VOLUMES_PER_SITE, len(rows))).round().astype(int)]


def _whole(sampler: SliceSampler, volume: int) -> np.ndarray:
    """One training volume, slices first, float32."""
    centres = torch.arange(sampler.volumes.shape[1])
    stack = sampler.volumes.gather(torch.full_like(centres, int(volume)), centres, 1)
    return stack[:, 0].float().cpu().numpy()
