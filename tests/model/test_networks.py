"""Shapes, initialisation and configuration of the MURD networks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bids_harmonize.model.networks import (
    MURDConfig,
    PerSiteLinear,
    build_discriminator,
    build_translator,
    preset_config,
)


def run_all_networks(config: MURDConfig, batch: int = 2) -> dict[str, torch.Size]:
    translator, discriminator = build_translator(config), build_discriminator(config)
    images = torch.zeros(batch, config.in_channels, config.image_size, config.image_size)
    sites = torch.arange(batch) % config.num_sites
    content = translator.content_encoder(images)
    style = translator.style_encoder(images, sites)
    return {
        "content": content.shape,
        "style": style.shape,
        "mapped": translator.mapping(torch.zeros(batch, config.latent_dim), sites).shape,
        "image": translator.render(content, images, style, style).shape,
        "logit": discriminator(images, sites).shape,
    }


def expected_shapes(config: MURDConfig, batch: int = 2) -> dict[str, tuple]:
    return {
        "content": (batch, config.content_channels, config.content_size, config.content_size),
        "style": (batch, config.style_dim),
        "mapped": (batch, config.style_dim),
        "image": (batch, config.in_channels, config.image_size, config.image_size),
        "logit": (batch,),
    }


def test_tiny_networks_output_shapes():
    config = preset_config("tiny", num_sites=3)
    assert run_all_networks(config) == expected_shapes(config)


@pytest.mark.parametrize("preset", ["tiny", "paper-tiny"])
def test_both_layouts_give_the_input_shape(preset):
    config = preset_config(preset, num_sites=3)
    assert run_all_networks(config) == expected_shapes(config)


def test_paper_networks_output_shapes_and_widths():
    """Paper layout and widths at 256 x 256, run on the meta device (shapes only, no arithmetic)."""
    config = preset_config("paper", num_sites=3)
    with torch.device("meta"):
        assert run_all_networks(config) == expected_shapes(config)
    assert (config.content_channels, config.content_size) == (256, 64)
    with torch.device("meta"):
        translator = build_translator(config)
    generator_widths = [
        m.out_channels for m in translator.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)
    ]
    assert generator_widths == [160, 80]
    assert translator.style_encoder.heads.weight.shape == (3, 64, 512)
    assert translator.mapping.heads.weight.shape == (3, 64, 128)


@pytest.mark.parametrize("preset", ["reference", "paper"])
def test_sizes_that_are_not_powers_of_two_keep_the_grid(preset):
    config = preset_config(preset, num_sites=2, image_size=208)
    with torch.device("meta"):
        assert run_all_networks(config) == expected_shapes(config)


def test_paper_generator_output_is_in_tanh_range():
    config = preset_config("paper-tiny", num_sites=2, image_size=32)
    translator = build_translator(config)
    images = torch.randn(2, 3, 32, 32) * 3
    output = translator.translate(images, torch.randn(2, config.style_dim) * 10)
    assert output.abs().max() <= 1.0


def test_he_normal_init_and_zero_biases():
    translator = build_translator(preset_config("paper-tiny", num_sites=2))
    conv = translator.generator.body[0].body[0]  # a 3x3 conv of the first residual block
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
    head = translator.mapping.heads
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / head.weight.shape[2]), rel=0.15)
    biases = [m.bias for m in translator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, PerSiteLinear))]
    assert all(torch.count_nonzero(bias) == 0 for bias in biases)


def test_per_site_heads_apply_each_rows_own_head():
    heads = PerSiteLinear(num_sites=3, in_features=4, out_features=2)
    torch.nn.init.normal_(heads.weight)
    torch.nn.init.normal_(heads.bias)
    features, sites = torch.randn(5, 4), torch.tensor([0, 2, 1, 2, 0])
    expected = torch.stack([heads.weight[s] @ f + heads.bias[s] for f, s in zip(features, sites)])
    torch.testing.assert_close(heads(features, sites), expected)


def test_config_round_trips_through_json():
    config = preset_config("tiny", num_sites=4, style_dim=8)
    assert MURDConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 42}, "divisible"),
        ({"image_size": 16}, "too small"),
        ({"in_channels": 2}, "odd"),
        ({"num_sites": 0}, "num_sites"),
    ],
)
def test_config_rejects_impossible_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        MURDConfig(**{"num_sites": 2, **overrides})


def test_config_rejects_unknown_keys_and_presets():
    with pytest.raises(ValueError, match="unknown keys"):
        MURDConfig.from_dict({"num_sites": 2, "widht": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge", num_sites=2)
