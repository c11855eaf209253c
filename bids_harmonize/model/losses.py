"""MURD training objectives: the loss terms, their weights, and the two per-step objectives.

`generator_terms` and `discriminator_terms` return every term unweighted, by name, so the
trainer can log them; `weighted_generator_loss` / `weighted_discriminator_loss` combine them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bids_harmonize.model.common import dataclass_from_dict
from bids_harmonize.model.modulated import centre_slice, soft_histogram, weighted_histogram
from bids_harmonize.model.networks import Discriminator, Translator
from bids_harmonize.model.slices import BACKGROUND, FOREGROUND_MARGIN

HISTOGRAM_BINS = 64
TEXTURE_SPAN = 0.25  # fine detail beyond +-0.25 of the [-1, 1] range is counted at the ends


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; the defaults are the reference's.

    `gradient` = 1 equals the reference's 0.1 inside the cycle term times the cycle weight 10.
    `diversity` > 0 pulls two styles of the same site together (reference); a negative value
    pushes them apart (StarGAN v2). See docs/model.md for why the reference sign is kept.
    `r1` is gamma of the R1 penalty gamma/2 * E||grad D(x)||^2 on real images.
    `histogram` weighs the distance between the intensity distributions of each fake and a real
    slice of its target site at the same height (not in the reference; docs/model.md says why).
    `anchor` weighs the L1 distance of each style's intensity curve to its site's anchor curve
    (anchors.py; style-aware layout only).
    """

    adversarial: float = 1.0
    content: float = 10.0
    style: float = 10.0
    identity: float = 10.0
    cycle: float = 10.0
    gradient: float = 1.0
    alignment: float = 0.01
    diversity: float = 1.0
    r1: float = 1.0
    histogram: float = 0.0
    texture: float = 0.0
    anchor: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossWeights:
        return dataclass_from_dict(cls, data)


@dataclass
class TrainingBatch:
    """Everything random that one training step consumes, drawn up front by the sampler."""

    images: Tensor  # (B, C, S, S) in [-1, 1]
    source_sites: Tensor  # (B,) site of each image
    target_sites: Tensor  # (B,) site to translate to
    latents: Tensor  # (B, latent_dim) z1, the style of the fake the generator learns from
    diversity_latents: Tensor  # (B, latent_dim) z2, a second style for the diversity term
    content_noise: Tensor  # (B, content_channels, s, s) N(0, std^2) added to every content map
    references: Tensor  # (B, C, S, S) a real image of each target site at the same height and crop


def adversarial_loss(logits: Tensor, real: bool) -> Tensor:
    """Non-saturating binary cross-entropy of logits against the label real/fake."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """1/2 E ||d D(x) / d x||^2 over real images (gamma is applied by the caller's weight)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return 0.5 * grad.float().pow(2).flatten(1).sum(1).mean()


def image_gradient_l1(images: Tensor, reconstructions: Tensor) -> Tensor:
    """L1 distance of finite-difference gradients along rows and columns (edge fidelity)."""

    def gradients(x: Tensor) -> tuple[Tensor, Tensor]:
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (rows_a, cols_a), (rows_b, cols_b) = gradients(images), gradients(reconstructions)
    return F.l1_loss(rows_a, rows_b) + F.l1_loss(cols_a, cols_b)


def _wasserstein(histograms: tuple[Tensor, Tensor], spacing: float) -> Tensor:
    """Mean 1-D Wasserstein-1 distance of paired histograms: L1 of their cumulative sums."""
    first, second = (torch.cumsum(h, dim=1) for h in histograms)
    return (first - second).abs().sum(1).mul(spacing).mean()


def histogram_distance(images: Tensor, references: Tensor, bins: int = HISTOGRAM_BINS) -> Tensor:
    """Mean Wasserstein-1 distance between the foreground intensity distributions of each image's
    centre slice and its reference's."""
    return _wasserstein((soft_histogram(images, bins), soft_histogram(references, bins)), 2.0 / (bins - 1))


def _high_pass(images: Tensor) -> tuple[Tensor, Tensor]:
    """Centre slice minus its 3x3 mean, and where the whole 3x3 neighbourhood is foreground."""
    centre = centre_slice(images)
    detail = centre - F.avg_pool2d(F.pad(centre, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    foreground = (centre > BACKGROUND + FOREGROUND_MARGIN).float()
    interior = -F.max_pool2d(-foreground, 3, stride=1, padding=1)
    return detail.flatten(1), interior.flatten(1)


def texture_distance(images: Tensor, references: Tensor, bins: int = HISTOGRAM_BINS) -> Tensor:
    """Mean Wasserstein-1 distance between the distributions of fine detail (centre slice minus
    its local mean, inside the brain) of each image and its reference: noise level and
    sharpness, which the intensity curve cannot change."""
    span = TEXTURE_SPAN
    histograms = tuple(weighted_histogram(*_high_pass(x), bins, -span, span) for x in (images, references))
    return _wasserstein(histograms, 2 * span / (bins - 1))


def content_alignment(content: Tensor) -> Tensor:
    """mean(c^2): KL of N(c, I) to N(0, I) up to a constant, keeping content maps centred."""
    return content.float().pow(2).mean()


def discriminator_terms(
    discriminator: torch.nn.Module, images: Tensor, source_sites: Tensor, fakes: Tensor, target_sites: Tensor
) -> dict[str, Tensor]:
    """Real/fake BCE and R1 on the reals. Reals and fakes go through D in one call.

    One call (instead of two) is what DistributedDataParallel expects per backward; instance
    norm keeps samples independent, so the result is the same as two separate calls.
    """
    images = images.detach().requires_grad_(True)
    logits = discriminator(torch.cat([images, fakes.detach()]), torch.cat([source_sites, target_sites]))
    real_logits, fake_logits = logits.float().split(images.shape[0])
    return {
        "real": adversarial_loss(real_logits, real=True),
        "fake": adversarial_loss(fake_logits, real=False),
        "r1": r1_penalty(real_logits, images),
    }


def curve_anchor_distance(translator: Translator, styles: Tensor, sites: Tensor, anchors: Tensor | None) -> Tensor:
    """Mean L1 distance of each style's intensity curve to its site's anchor curve (zero without
    anchors or without curves)."""
    if anchors is None or not translator.needs_source_style:
        return styles.new_zeros(())
    return F.l1_loss(translator.generator.curve(styles), anchors[sites])


def generator_terms(
    translator: Translator,
    discriminator: Discriminator,
    batch: TrainingBatch,
    diversity_fakes: Tensor,
    curve_anchors: Tensor | None = None,
) -> dict[str, Tensor]:
    """All generator-side terms of one step, keyed like the fields of `LossWeights`.

    `diversity_fakes` = G(E_c(x) + noise, F_j(z2)), computed without gradient for the
    discriminator step, is reused here as the second, detached rendering of the diversity term.
    `curve_anchors` (num_sites, knots + 1): each site's anchor curve (anchors.py), or None.
    """
    x, noise = batch.images, batch.content_noise
    content = translator.content_encoder(x)
    style_fake = translator.mapping(batch.latents, batch.target_sites)
    style_own = translator.style_encoder(x, batch.source_sites)
    if translator.needs_source_style:
        # Rendering an image in its own style returns it exactly, by construction (modulated.py).
        fake, identity = translator.render(content + noise, x, style_fake, style_own), x
    else:  # the fake and the identity reconstruction share their content input: one call
        fake, identity = translator.render(
            torch.cat([content + noise, content + noise]), None, torch.cat([style_fake, style_own]), None
        ).split(x.shape[0])
    fake_content = translator.content_encoder(fake)
    cycled = translator.render(fake_content + noise, fake, style_own, style_fake)
    return {
        "adversarial": adversarial_loss(discriminator(fake, batch.target_sites).float(), real=True),
        "content": F.l1_loss(fake_content.float(), content.float()),
        "style": F.l1_loss(translator.style_encoder(fake, batch.target_sites).float(), style_fake.float()),
        "identity": F.l1_loss(identity, x),
        "cycle": F.l1_loss(cycled, x),
        "gradient": image_gradient_l1(x, cycled),
        "alignment": content_alignment(content),
        "diversity": F.l1_loss(fake, diversity_fakes.detach()),
        "histogram": histogram_distance(fake, batch.references),
        "texture": texture_distance(fake, batch.references),
        "anchor": curve_anchor_distance(
            translator,
            torch.cat([style_own, style_fake]),
            torch.cat([batch.source_sites, batch.target_sites]),
            curve_anchors,
        ),
    }


def weighted_generator_loss(terms: dict[str, Tensor], weights: LossWeights) -> Tensor:
    return sum(getattr(weights, name) * value for name, value in terms.items())


def weighted_discriminator_loss(terms: dict[str, Tensor], weights: LossWeights) -> Tensor:
    return terms["real"] + terms["fake"] + weights.r1 * terms["r1"]


class GeneratorStep(nn.Module):
    """The translator with the generator-side objective as its forward.

    DistributedDataParallel synchronises gradients of parameters used in one forward call; the
    objective uses each network several times, so the whole objective is that one call.
    """

    def __init__(self, translator: Translator, curve_anchors: Tensor | None = None) -> None:
        super().__init__()
        self.translator = translator
        self.curve_anchors = curve_anchors

    def forward(self, batch: TrainingBatch, diversity_fakes: Tensor, discriminator: Discriminator) -> dict[str, Tensor]:
        return generator_terms(self.translator, discriminator, batch, diversity_fakes, self.curve_anchors)
