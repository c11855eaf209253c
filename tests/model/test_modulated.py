"""The style-aware layout: curves invert exactly, an untrained translator is the identity, the
style controls the rendering without a periodic pattern, and the discriminator sees histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_harmonize.model import build_translator, preset_config
from bids_harmonize.model.curves import apply_curve, apply_lookup, curve_from_logits, invert_curve
from bids_harmonize.model.modulated import soft_histogram
from bids_harmonize.model.networks import build_discriminator
from rounding import rounding_tolerance, summed_terms

SIZE = 32


def brain_like_images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A disc of smoothly varying 'tissue' on a -1 background, 3 slices."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    inside = (x**2 + y**2) < 0.7
    tissue = (
        0.2 * torch.sin(3 * x) + 0.3 * torch.cos(2 * y) + 0.1 * torch.rand(batch, 3, SIZE, SIZE, generator=generator)
    )
    return torch.where(inside, tissue, torch.tensor(-1.0))


def random_logits(batch: int, knots: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, knots, generator=torch.Generator().manual_seed(seed))


def test_equal_logits_give_the_identity_curve():
    values = curve_from_logits(torch.zeros(2, 16))
    torch.testing.assert_close(values, torch.linspace(-1, 1, 17).expand(2, -1))
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(apply_curve(images, values), images)


def test_curves_rise_strictly_from_minus_one_to_one_and_invert_exactly():
    values = curve_from_logits(random_logits(3, 32, seed=1) * 3)
    assert (values[:, 0] == -1).all() and (values[:, -1] == 1).all()
    assert (values.diff(dim=1) > 0).all()
    images = torch.rand(3, 1, 16, 16) * 2.4 - 1.2  # a little beyond the range too: ends are extended
    torch.testing.assert_close(invert_curve(apply_curve(images, values), values), images, atol=1e-4, rtol=0)


def test_lookup_table_matches_the_composed_curves_and_extends_its_ends():
    source, target = curve_from_logits(random_logits(2, 32, seed=2))
    inputs, outputs = source, target  # the composite's table: source knot values -> target knot values
    probe = torch.linspace(-0.99, 0.99, 101)
    direct = apply_curve(invert_curve(probe[None], source[None]), target[None])[0]
    np.testing.assert_allclose(apply_lookup(probe.numpy(), inputs.numpy(), outputs.numpy()), direct.numpy(), atol=1e-3)
    beyond = apply_lookup(np.array([1.5], np.float32), inputs.numpy(), outputs.numpy())
    assert beyond[0] > outputs[-1].item()  # extended with the end slope, not clipped


def test_a_lookup_whose_lowest_inputs_tie_keeps_values_below_them_finite():
    # An image whose lowest brain quantiles sit at the floor of the model range gives such a table;
    # the native grid has values below that floor (the model input is clipped, the scan is not).
    inputs = np.array([-1.0, -1.0, -0.2, 1.0], np.float32)
    outputs = np.array([-1.0, -0.9, -0.1, 1.0], np.float32)
    below = apply_lookup(np.array([-1.2, -1.0], np.float32), inputs, outputs)
    assert np.all(np.isfinite(below)) and below[0] == pytest.approx(-1.2)


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_an_untrained_translator_returns_its_input(preset):
    config = preset_config(preset, num_sites=3, image_size=SIZE)
    translator = build_translator(config)
    images = brain_like_images()
    styles = torch.randn(2, config.style_dim), torch.randn(2, config.style_dim)
    # Tight on any machine: the zero-initialised last layers give exactly zero whatever order
    # the kernels sum in, so only the identity curves' own arithmetic rounds (a few float32 ulps).
    torch.testing.assert_close(translator.translate(images, *styles), images.contiguous(), atol=1e-5, rtol=0)


def perturbed_translator(seed: int = 0):
    """A tiny translator with every weight moved, as training would move them."""
    config = preset_config("tiny", num_sites=2, image_size=SIZE)
    translator = build_translator(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in translator.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return translator.eval(), config


def test_translating_to_the_images_own_style_changes_nothing():
    translator, config = perturbed_translator()
    images, style = brain_like_images(), torch.randn(2, config.style_dim)
    with torch.no_grad():
        # The target and source renderings are rows of one batch: equal up to float32 rounding
        # (see rounding.py), whose bound follows the network's sums.
        terms = summed_terms(translator, lambda: translator.translate(images, style, style))
        tolerance = rounding_tolerance(terms, images.abs().max())
        own = translator.translate(images, style, style)
        torch.testing.assert_close(own, images.contiguous(), atol=tolerance, rtol=0)


def test_two_styles_give_clearly_different_outputs_without_a_periodic_pattern():
    translator, config = perturbed_translator()
    images = brain_like_images(batch=1)
    source = torch.zeros(1, config.style_dim)
    with torch.no_grad():
        first = translator.translate(images, torch.full((1, config.style_dim), 2.0), source)
        second = translator.translate(images, torch.full((1, config.style_dim), -2.0), source)
    inside = images > -0.95
    difference = (first - second)[inside]
    assert difference.abs().mean() > 0.05  # in a [-1, 1] range: clearly visible
    # A checkerboard (the paper generator's transposed convolutions) puts its energy at the
    # highest spatial frequency; here that share must stay small.
    centre_difference = (first - second)[0, 1]
    spectrum = torch.fft.fft2(centre_difference).abs() ** 2
    nyquist = spectrum[SIZE // 2, :].sum() + spectrum[:, SIZE // 2].sum()
    assert nyquist / spectrum.sum() < 0.02


def test_soft_histogram_sums_to_one_and_follows_intensity():
    images = brain_like_images()
    histogram = soft_histogram(images, bins=16)
    torch.testing.assert_close(histogram.sum(1), torch.ones(2))
    brighter = soft_histogram(torch.where(images > -0.95, images + 0.3, images), bins=16)
    centres = torch.linspace(-1, 1, 16)
    assert ((brighter * centres).sum(1) > (histogram * centres).sum(1) + 0.2).all()


def test_discriminator_gradients_reach_the_intensities_through_the_histogram():
    config = preset_config("tiny", num_sites=2, image_size=SIZE)
    discriminator = build_discriminator(config)
    images = brain_like_images().requires_grad_(True)
    discriminator(images, torch.tensor([0, 1])).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_the_untrained_residual_branch_receives_a_gradient():
    """The renderer's last layer starts at zero (identity start); its input must still depend on
    the style, or target and source residuals cancel and the branch never learns (it did not,
    while the style projections of AdaIN started at zero too)."""
    translator = build_translator(preset_config("tiny", num_sites=2, image_size=SIZE))
    images = brain_like_images()
    styles = torch.randn(2, 2, translator.config.style_dim, generator=torch.Generator().manual_seed(1))
    output = translator.translate(images, styles[0], styles[1])
    output.square().mean().backward()
    last = translator.generator.renderer.to_residual.weight
    assert last.grad is not None and last.grad.abs().max() > 1e-4
