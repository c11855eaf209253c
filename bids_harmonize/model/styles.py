"""The site styles a bundle stores: each site's mean style code, with the curve head calibrated so
those styles render exactly the site anchors. Training ends with this, and validation.py scores
every snapshot through it, so what is validated is what the bundle would be."""

from __future__ import annotations

import torch
from torch import Tensor

from bids_harmonize.model.anchors import calibrate_curve_head
from bids_harmonize.model.data import SliceSampler
from bids_harmonize.model.infer import mean_style
from bids_harmonize.model.networks import Translator


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
