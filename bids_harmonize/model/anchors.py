"""Site-level anchors for the style curves: where each site's intensity curve should start from.

The style-aware generator renders x -> curve_target(inverse(curve_source)(x)) (curves.py). The
adversarial signal alone moves the curves slowly and differently from seed to seed, and a curve
fitted per image (as Nyul or histogram matching do) erases each subject's own tissue proportions
along with the site's. The anchors are one curve per *site*: the map from a canonical intensity
distribution to the site's pooled foreground distribution, in quantiles. The canonical
distribution is the mean of the sites' quantile functions (their Wasserstein barycentre), so
no site is privileged and, for any pair of sites, target(inverse(source)) is the site-level
quantile map from source to target. A loss term pulls every style's curve towards its site's
anchor; the residual branch and the adversarial terms remain free to do the rest.

A site whose subjects differ in anatomy on average (older, say) has a shifted pooled
distribution, and a site-level map from pooled quantiles absorbs that difference: it removes
biology along with the scanner. With covariates (age, sex: the group level passes those of
participants.tsv), each site's quantiles are instead its coefficients in a per-quantile linear
model `volume quantile ~ site + covariates` over the training volumes (`adjusted_site_quantiles`):
every site's quantile function at the same covariate values, so a site's older population no
longer moves its anchor. benchmarks/downstream.py measures both, with age confounded with site.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bids_harmonize.model.curves import MIN_SLOPE, logits_from_curve
from bids_harmonize.model.losses import curve_anchor_distance
from bids_harmonize.model.modulated import CURVE_GAIN, centre_slice
from bids_harmonize.model.slices import BACKGROUND, FOREGROUND_MARGIN

# Quantile levels of each site's pooled foreground; the ends are left out (bright vessels and
# partial-volume edges say little about the scanner).
QUANTILE_LEVELS = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
# Quantiles are kept this far inside the model range, so the curve's end segments keep a slope.
RANGE_MARGIN = 0.02


def site_quantiles(sampler, slices_per_site: int, brain_mask: Tensor | None = None) -> Tensor:
    """(num_sites, len(QUANTILE_LEVELS)) quantiles of each site's pooled intensities over up to
    `slices_per_site` of its training slices, evenly spaced (deterministic).

    brain_mask (slices, height, width), on the volumes' grid (slices first): only brain voxels
    count. Without it, every foreground voxel does, which on whole-head images includes the
    scalp, and on images with dark CSF misses part of the CSF; pass the template's mask.
    """
    rows = []
    for site in range(sampler.config.num_sites):
        volume_index, centre = sampler.site_positions(site)
        chosen = torch.linspace(0, len(centre) - 1, min(slices_per_site, len(centre)), device=centre.device)
        chosen = chosen.round().long()
        values = [_voxels(sampler, volume_index[chunk], centre[chunk], brain_mask) for chunk in chosen.split(64)]
        rows.append(torch.quantile(torch.cat(values), QUANTILE_LEVELS))
    return torch.stack(rows)


def volume_quantiles(sampler, brain_mask: Tensor | None = None, slices_per_volume: int | None = None) -> Tensor:
    """(num_volumes, len(QUANTILE_LEVELS)) quantiles of each training volume's intensities over
    its usable slices (or up to `slices_per_volume` of them, evenly spaced); as site_quantiles.

    Every slice by default: a subset is a sample of the subject's anatomy, and each image's map
    takes its own quantiles from the whole brain. With 32 slices per volume the anchors' sampling
    error alone cost the IR-FSPGR site of the downstream benchmark 0.3 points of WM volume
    difference (2.41 -> 2.12 %, seed-0 bundle, docs/model.md).
    """
    rows = []
    for volume in range(len(sampler.site_labels)):
        centre = sampler.slice_centre[sampler.slice_volume == volume]
        if slices_per_volume is not None:
            chosen = torch.linspace(0, len(centre) - 1, min(slices_per_volume, len(centre)), device=centre.device)
            centre = centre[chosen.round().long()]
        values = _voxels(sampler, torch.full_like(centre, volume), centre, brain_mask) if len(centre) else None
        missing = values is None or len(values) == 0  # no usable slice or no brain voxel: NaN, left out of fits
        # numpy's quantile: torch's refuses inputs over 2**24 values (a fine-grid whole volume).
        rows.append(
            torch.full_like(QUANTILE_LEVELS, float("nan"))
            if missing
            else torch.from_numpy(np.quantile(values.numpy(), QUANTILE_LEVELS.numpy()))
        )
    return torch.stack(rows)


def adjusted_site_quantiles(
    quantiles: Tensor, site_labels: Tensor, covariates: Tensor, num_sites: int
) -> tuple[Tensor, int]:
    """Each site's quantile function at the training volumes' mean covariates: the site
    coefficients of the least-squares fit `quantile ~ site + (covariates - mean)`, one fit per
    quantile level, over the volumes with every covariate (and their quantiles) present.

    quantiles (V, Q), site_labels (V,), covariates (V, C) with NaN where a value is missing.
    Returns (num_sites, Q) and the number of volumes that counted (anchor_design's errors).
    """
    quantiles = quantiles.double().cpu()
    design, usable = anchor_design(site_labels, covariates, num_sites, torch.isfinite(quantiles).all(dim=1))
    coefficients = torch.linalg.lstsq(design, quantiles[usable]).solution
    return torch.cummax(coefficients[:num_sites], dim=1).values, int(usable.sum())


def anchor_design(
    site_labels: Tensor | Sequence[int], covariates: Tensor, num_sites: int, present: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The design matrix [site indicators | centred covariates] over the volumes with every
    covariate present (and ``present``), and which volumes those are. Raises ValueError, saying
    why, when a site has no such volume or the covariates are determined by site (or by each
    other), so their effect cannot be told apart from the sites'."""
    site_labels, covariates = torch.as_tensor(site_labels).cpu(), covariates.double().cpu()
    usable = torch.isfinite(covariates).all(dim=1)
    if present is not None:
        usable &= present.cpu()
    missing = sorted(set(range(num_sites)) - set(site_labels[usable].tolist()))
    if missing:
        raise ValueError(f"site indices {missing} have no training volume with every covariate value")
    kept = covariates[usable]
    design = torch.cat([torch.nn.functional.one_hot(site_labels[usable], num_sites).double(), kept - kept.mean(0)], 1)
    if torch.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError("the covariates are determined by site (or by each other) among the training volumes")
    return design, usable


def covariate_matrix(covariates: Mapping[str, Sequence[float | None]] | None, num_volumes: int) -> Tensor | None:
    """name -> one value per volume (None or NaN: missing), as a (num_volumes, C) float64 matrix
    with NaN where a value is missing (None without any covariate)."""
    if not covariates:
        return None
    wrong = {name: len(values) for name, values in covariates.items() if len(values) != num_volumes}
    if wrong:
        raise ValueError(f"anchor covariates need one value per training volume ({num_volumes}); got {wrong}")
    rows = [[float("nan") if value is None else float(value) for value in values] for values in covariates.values()]
    return torch.tensor(rows, dtype=torch.float64).T.contiguous()


def anchor_record(covariates: Mapping[str, Sequence[float | None]] | None, volumes: int) -> dict[str, Any]:
    """What the bundle's card says about the anchors' covariates (nothing when there were none)."""
    if not covariates:
        return {}
    return {"anchor_covariates": {"columns": list(covariates), "volumes": volumes}}


def _voxels(sampler, volume_index: Tensor, centre: Tensor, brain_mask: Tensor | None) -> Tensor:
    """The intensities that count for the anchors in these centre slices, as float64 on the CPU."""
    if brain_mask is None:
        slices = centre_slice(sampler.stacks(volume_index, centre)).flatten()
        return slices[slices > BACKGROUND + FOREGROUND_MARGIN].double().cpu()
    slices = sampler.volumes.gather(volume_index, centre, 1)[:, 0].float().cpu()
    return slices[brain_mask[centre.cpu()].expand_as(slices)].double()


def anchor_curves(quantiles: Tensor, curve_knots: int) -> Tensor:
    """(num_sites, Q) site quantiles -> (num_sites, curve_knots + 1) knot values of each site's
    anchor curve (canonical -> site), in the form `curves.curve_from_logits` can represent:
    -1 to +1, every step at least MIN_SLOPE of the identity's."""
    quantiles = quantiles.double().clamp(-1 + RANGE_MARGIN, 1 - RANGE_MARGIN)
    quantiles = torch.cummax(quantiles, dim=1).values  # ties from clamping stay monotone
    canonical = quantiles.mean(dim=0)
    ends = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    knots = torch.linspace(-1.0, 1.0, curve_knots + 1, dtype=torch.float64)
    rows = []
    for site_quantile in quantiles:
        x = torch.cat([ends[0], canonical, ends[1]])
        y = torch.cat([ends[0], site_quantile, ends[1]])
        rows.append(_interp(knots, x, y))
    values = torch.stack(rows)
    # Mixing with the identity gives every step the minimum slope the curve parametrisation keeps.
    return ((1.0 - MIN_SLOPE) * values + MIN_SLOPE * knots).float()


def _interp(at: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (x, y) at `at`; x rises (ties are resolved to the left)."""
    index = (torch.searchsorted(x, at, right=True) - 1).clamp(0, len(x) - 2)
    x0, x1, y0, y1 = x[index], x[index + 1], y[index], y[index + 1]
    return y0 + (at - x0) / (x1 - x0).clamp_min(1e-12) * (y1 - y0)


def fit_curves_to_anchors(
    translator, sampler, anchors: Tensor, steps: int, lr: float, betas: tuple[float, float]
) -> None:
    """`steps` Adam steps of the style encoder, mapping network and curve head on the anchor
    term alone (batches from the training sampler), so adversarial training starts from the
    site-level curves rather than the identity."""
    parameters = [
        *translator.style_encoder.parameters(),
        *translator.mapping.parameters(),
        *translator.generator.curve_head.parameters(),
    ]
    optimizer = torch.optim.Adam(parameters, lr=lr, betas=betas)
    for _ in range(steps):
        batch = sampler.sample()
        styles = torch.cat(
            [
                translator.style_encoder(batch.images, batch.source_sites),
                translator.mapping(batch.latents, batch.target_sites),
            ]
        )
        sites = torch.cat([batch.source_sites, batch.target_sites])
        optimizer.zero_grad(set_to_none=True)
        curve_anchor_distance(translator, styles, sites, anchors).backward()
        optimizer.step()


def calibrate_curve_head(generator, site_styles: Tensor, anchors: Tensor) -> float:
    """Make each site's stored style render exactly its anchor curve; returns the largest
    remaining knot difference.

    Training pulls every style's curve towards its site's anchor, but the style a bundle uses
    for a site is the mean over whole slices, which training never saw (it sees crops). The
    curve head's last layer is linear, so the smallest change of its weights that maps each
    site style's hidden features onto the anchor's logits is a least-squares solution (one
    equation per site, one unknown per hidden feature): closed form, deterministic. Nothing
    else moves (the style codes, the residual branch), so the change is exactly the site curves.
    """
    head = generator.curve_head
    last = head[-1]
    with torch.no_grad():
        hidden = head[:-1](site_styles.detach().float()).double()
        wanted = logits_from_curve(anchors.double()) / CURVE_GAIN
        wanted = wanted - wanted.mean(dim=1, keepdim=True)  # softmax ignores a constant: pick the centred one
        current = torch.nn.functional.linear(hidden, last.weight.double(), last.bias.double())
        current = current - current.mean(dim=1, keepdim=True)
        design = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1)
        change = torch.linalg.pinv(design) @ (wanted - current)  # (features + 1, knots): minimum norm
        last.weight += change[:-1].T.to(last.weight.dtype)
        last.bias += change[-1].to(last.bias.dtype)
        return float((generator.curve(site_styles.float()) - anchors).abs().max())


def image_lookup(
    volume: np.ndarray, brain_mask: np.ndarray, source: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The intensity map of one image (model range), as a lookup table: its own brain quantiles
    moved by the site difference at each level, `target - source` (the sites' anchor quantiles).

    A site curve maps every subject of a site alike, by where an intensity falls in the site's
    pooled distribution; shifting the image's own quantiles keeps what the subject adds to its
    site (its anatomy, its own tissue contrast) and removes only the site's part. On the
    downstream benchmark this took GM/WM volume differences from 6.8/6.6 % to 1.6/3.3 %
    (benchmarks/results/downstream.md).
    """
    values = np.asarray(volume, np.float64)[np.asarray(brain_mask, bool)]
    if values.size == 0:
        raise ValueError("the brain mask selects no voxel of the volume: pass the template's brain mask")
    own = np.quantile(values, QUANTILE_LEVELS.numpy())
    moved = np.clip(own + np.asarray(target, np.float64) - np.asarray(source, np.float64), -1.0, 1.0)
    inputs = np.maximum.accumulate(np.concatenate([[-1.0], own, [1.0]]))
    outputs = np.maximum.accumulate(np.concatenate([[-1.0], moved, [1.0]]))
    return inputs.astype(np.float32), outputs.astype(np.float32)
