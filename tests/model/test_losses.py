"""Every loss term is finite and responds to its inputs; totals use the configured weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bids_harmonize.model.losses import (
    LossWeights,
    TrainingBatch,
    adversarial_loss,
    content_alignment,
    discriminator_terms,
    generator_terms,
    histogram_distance,
    image_gradient_l1,
    r1_penalty,
    texture_distance,
    weighted_discriminator_loss,
    weighted_generator_loss,
)
from bids_harmonize.model.networks import build_discriminator, build_translator, preset_config

GENERATOR_TERMS = {
    "adversarial",
    "content",
    "style",
    "identity",
    "cycle",
    "gradient",
    "alignment",
    "diversity",
    "histogram",
    "texture",
    "anchor",
}


@pytest.fixture()
def networks(tiny_config):
    torch.manual_seed(0)
    return build_translator(tiny_config), build_discriminator(tiny_config)


def random_batch(config, seed: int = 0) -> TrainingBatch:
    generator = torch.Generator().manual_seed(seed)
    size, batch = config.image_size, 2
    return TrainingBatch(
        images=torch.rand(batch, config.in_channels, size, size, generator=generator) * 2 - 1,
        source_sites=torch.tensor([0, 1]),
        target_sites=torch.tensor([1, 0]),
        latents=torch.randn(batch, config.latent_dim, generator=generator),
        diversity_latents=torch.randn(batch, config.latent_dim, generator=generator),
        content_noise=torch.randn(
            batch, config.content_channels, config.content_size, config.content_size, generator=generator
        ),
        references=torch.rand(batch, config.in_channels, size, size, generator=generator) * 2 - 1,
    )


def perturbed(batch: TrainingBatch) -> TrainingBatch:
    images = (batch.images + 0.1 * torch.randn_like(batch.images)).clamp(-1, 1)
    return dataclasses.replace(batch, images=images)


@pytest.mark.parametrize("preset", ["tiny", "paper-tiny"])
def test_generator_terms_are_finite_and_respond_to_the_images(preset):
    config = preset_config(preset, num_sites=2, image_size=32)
    torch.manual_seed(0)
    translator, discriminator = build_translator(config), build_discriminator(config)
    with torch.no_grad():  # off the identity start, so every term has something to measure
        for parameter in translator.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    batch = random_batch(config)
    other_fakes = torch.rand(2, 3, config.image_size, config.image_size) * 2 - 1
    anchors = torch.linspace(-1, 1, config.curve_knots + 1).repeat(2, 1)  # identity curves for both sites
    before = generator_terms(translator, discriminator, batch, other_fakes, anchors)
    after = generator_terms(translator, discriminator, perturbed(batch), other_fakes, anchors)
    assert set(before) == GENERATOR_TERMS
    # The style-aware layout renders an image in its own style exactly: identity is 0 there; the
    # paper layout has no curves, so no anchor term.
    exact = {"identity"} if translator.needs_source_style else {"anchor"}
    for name in GENERATOR_TERMS - exact:
        assert torch.isfinite(before[name]), name
        assert before[name].item() != after[name].item(), f"{name} ignores its input"
    for name in exact:
        assert before[name].item() == after[name].item() == 0.0


def test_discriminator_terms_are_finite_and_respond_to_reals_and_fakes(networks, tiny_config):
    _, discriminator = networks
    batch = random_batch(tiny_config)
    fakes = torch.rand_like(batch.images) * 2 - 1
    base = discriminator_terms(discriminator, batch.images, batch.source_sites, fakes, batch.target_sites)
    new_reals = discriminator_terms(
        discriminator, perturbed(batch).images, batch.source_sites, fakes, batch.target_sites
    )
    new_fakes = discriminator_terms(discriminator, batch.images, batch.source_sites, fakes.flip(-1), batch.target_sites)
    assert all(torch.isfinite(value) for value in base.values())
    assert new_reals["real"] != base["real"] and new_reals["r1"] != base["r1"]
    assert new_fakes["fake"] != base["fake"] and new_fakes["real"] == base["real"]


def test_adversarial_loss_is_bce_against_the_label():
    logits = torch.tensor([0.0, 2.0])
    assert adversarial_loss(logits, real=True) < adversarial_loss(logits, real=False)
    assert adversarial_loss(torch.zeros(3), real=True).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_r1_penalty_of_a_linear_critic_is_half_its_squared_weight_norm():
    weight = torch.randn(1, 3, 4, 4)
    images = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (images * weight).flatten(1).sum(1)
    assert r1_penalty(logits, images).item() == pytest.approx(0.5 * weight.pow(2).sum().item(), rel=1e-5)


def test_image_gradient_l1_sees_edges_not_offsets():
    image = torch.rand(1, 3, 8, 8)
    assert image_gradient_l1(image, image + 0.5).item() == pytest.approx(0.0, abs=1e-6)
    assert image_gradient_l1(image, image.flip(-1)).item() > 0


def test_content_alignment_is_mean_square():
    assert content_alignment(torch.full((2, 4, 3, 3), 3.0)).item() == pytest.approx(9.0)


def test_weighted_losses_use_every_weight_with_its_sign():
    terms = {name: torch.tensor(float(i + 1)) for i, name in enumerate(sorted(GENERATOR_TERMS))}
    weights = LossWeights(diversity=-1.0)
    expected = sum(getattr(weights, name) * value for name, value in terms.items())
    assert weighted_generator_loss(terms, weights).item() == pytest.approx(expected.item())
    flipped = weighted_generator_loss(terms, LossWeights()) - weighted_generator_loss(terms, weights)
    assert flipped.item() == pytest.approx(2 * terms["diversity"].item())
    d_terms = {"real": torch.tensor(1.0), "fake": torch.tensor(2.0), "r1": torch.tensor(3.0)}
    assert weighted_discriminator_loss(d_terms, LossWeights(r1=10.0)).item() == pytest.approx(33.0)


def test_reference_weights_are_the_defaults():
    assert LossWeights().to_dict() == {
        "adversarial": 1.0,
        "content": 10.0,
        "style": 10.0,
        "identity": 10.0,
        "cycle": 10.0,
        "gradient": 1.0,
        "alignment": 0.01,
        "diversity": 1.0,
        "r1": 1.0,
        "histogram": 0.0,
        "texture": 0.0,
        "anchor": 0.0,
    }


def test_histogram_distance_is_zero_for_equal_distributions_and_grows_with_a_shift():
    images = torch.rand(2, 3, 16, 16) * 1.6 - 0.8
    assert histogram_distance(images, images).item() == pytest.approx(0.0, abs=1e-6)
    near, far = histogram_distance(images + 0.1, images), histogram_distance(images + 0.3, images)
    assert 0.05 < near.item() < far.item()
    assert far.item() == pytest.approx(0.3, rel=0.15)  # W1 of a shift is the shift


def test_texture_sees_noise_and_ignores_brightness_where_the_histogram_does_the_opposite():
    generator = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    smooth = torch.where((x**2 + y**2) < 0.7, 0.3 * torch.sin(2 * x), torch.tensor(-1.0)).expand(2, 3, 32, 32)
    noisy = torch.where(smooth > -0.95, smooth + 0.05 * torch.randn(smooth.shape, generator=generator), smooth)
    brighter = torch.where(smooth > -0.95, smooth + 0.2, smooth)
    assert texture_distance(smooth, smooth).item() == pytest.approx(0.0, abs=1e-6)
    assert texture_distance(noisy, smooth).item() > 3 * histogram_distance(noisy, smooth).item()
    assert histogram_distance(brighter, smooth).item() > 10 * texture_distance(brighter, smooth).item()
