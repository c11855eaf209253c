"""Site curve anchors (model/anchors.py): the closed-form curves, the loss that pulls styles to
them, and the calibration that makes a bundle's site styles render them exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bids_harmonize.model import TrainConfig, load_bundle, train
from bids_harmonize.model.anchors import anchor_curves, calibrate_curve_head, site_quantiles, volume_quantiles
from bids_harmonize.model.curves import MIN_SLOPE, apply_curve, apply_lookup, invert_curve
from bids_harmonize.model.data import SliceSampler, stack_volumes
from bids_harmonize.model.losses import LossWeights
from bids_harmonize.model.networks import build_translator

LEVELS = np.linspace(0.01, 0.99, 99)


def _sampler(volumes: list[np.ndarray], labels: list[int], config, min_foreground: float) -> SliceSampler:
    stacked, _ = stack_volumes(volumes)
    return SliceSampler(
        stacked,
        labels,
        config,
        batch_size=2,
        site_balanced=True,
        min_foreground=min_foreground,
        content_noise_std=0.0,
        seed=0,
        device=torch.device("cpu"),
    )


def _quantiles(samples: list[np.ndarray]) -> torch.Tensor:
    return torch.tensor(np.stack([np.quantile(s, LEVELS) for s in samples]))


def test_anchor_curves_are_valid_curves_and_map_one_site_onto_another():
    rng = np.random.default_rng(0)
    dark = np.clip(rng.normal(-0.4, 0.2, 50_000), -0.98, 0.98)
    bright = np.clip(rng.normal(0.3, 0.3, 50_000), -0.98, 0.98)
    anchors = anchor_curves(_quantiles([dark, bright]), curve_knots=32)
    assert anchors.shape == (2, 33)
    assert torch.all(anchors[:, 0] == -1) and torch.all(anchors[:, -1] == 1)
    assert torch.all(anchors.diff(dim=1) >= 2 * MIN_SLOPE / 32 - 1e-6)
    # target(inverse(source)): the dark site's median lands near the bright site's median
    median = torch.tensor([[float(np.median(dark))]])
    mapped = apply_curve(invert_curve(median, anchors[:1]), anchors[1:])
    assert abs(float(mapped) - float(np.median(bright))) < 0.1


def test_identical_sites_get_identical_anchors_so_translation_is_the_identity():
    values = np.random.default_rng(1).uniform(-0.9, 0.9, 20_000)
    anchors = anchor_curves(_quantiles([values, values]), curve_knots=16)
    assert torch.allclose(anchors[0], anchors[1])


def test_site_quantiles_read_each_sites_foreground(toy_data, tiny_config):
    volumes, labels = toy_data
    sampler = _sampler(volumes, labels, tiny_config, min_foreground=0.1)
    quantiles = site_quantiles(sampler, slices_per_site=16)
    assert quantiles.shape == (2, 99)
    assert torch.all(quantiles.diff(dim=1) >= 0)
    assert not torch.allclose(quantiles[0], quantiles[1], atol=0.05)  # the toy sites differ in contrast


def test_each_volumes_quantiles_read_every_usable_slice(toy_data, tiny_config):
    labels = toy_data[1]
    volumes = [np.concatenate([v, v[..., ::-1] * 0.9, v * 0.8, v[..., ::-1]], axis=2) for v in toy_data[0]]  # 48 slices
    sampler = _sampler(volumes, labels, tiny_config, min_foreground=0.1)
    brain = torch.ones(np.moveaxis(volumes[0], 2, 0).shape, dtype=torch.bool)
    every = volume_quantiles(sampler, brain)
    for index, volume in enumerate(volumes):
        usable = sampler.slice_centre[sampler.slice_volume == index].numpy()
        stored = np.moveaxis(volume, 2, 0)[usable].astype(np.float16)  # the sampler keeps float16
        np.testing.assert_allclose(every[index].numpy(), np.quantile(stored.astype(np.float64), LEVELS), atol=1e-6)
    assert not torch.allclose(volume_quantiles(sampler, brain, slices_per_volume=2), every)


def test_calibration_makes_each_site_style_render_its_anchor(tiny_config):
    torch.manual_seed(0)
    translator = build_translator(tiny_config)
    rng = np.random.default_rng(2)
    anchors = anchor_curves(
        _quantiles([rng.normal(-0.3, 0.2, 9_000), rng.normal(0.2, 0.3, 9_000)]), tiny_config.curve_knots
    )
    styles = torch.randn(2, tiny_config.style_dim)
    residual = calibrate_curve_head(translator.generator, styles, anchors)
    assert residual < 1e-3
    with torch.no_grad():
        np.testing.assert_allclose(translator.generator.curve(styles).numpy(), anchors.numpy(), atol=1e-3)


def test_an_anchored_bundle_translates_with_the_site_level_curves(
    tmp_path, toy_data, tiny_config, anchored_train_config
):
    volumes, labels = toy_data
    options = anchored_train_config
    bundle = load_bundle(train(volumes, labels, ["siteA", "siteB"], tiny_config, options, tmp_path, progress=False))
    assert bundle.site_anchored
    volume = volumes[0]
    # the source style is the site's stored style, whatever the volume: one curve per site
    assert torch.equal(bundle.source_style(volume, "siteA"), bundle.style_code("siteA"))
    assert torch.equal(bundle.source_style(volumes[1], "siteA"), bundle.source_style(volume, "siteA"))
    inputs, outputs = bundle.intensity_lookup(bundle.style_code("siteB"), bundle.source_style(volume, "siteA"))
    sampler = _sampler(volumes, labels, tiny_config, min_foreground=options.min_foreground)
    anchors = anchor_curves(site_quantiles(sampler, options.style_slices_per_site), tiny_config.curve_knots)
    np.testing.assert_allclose(inputs, anchors[0].numpy(), atol=1e-3)
    np.testing.assert_allclose(outputs, anchors[1].numpy(), atol=1e-3)


def test_with_a_brain_mask_only_brain_voxels_set_the_anchors(toy_data, tiny_config):
    volumes, labels = toy_data
    scalp = [v.copy() for v in volumes]
    brain = np.zeros(volumes[0].shape, bool)
    brain[4:-4, 4:-4, :] = True
    for volume in scalp:
        volume[~brain & (volume > -1)] = 0.95  # a bright rim outside the brain
    sampler = _sampler(scalp, labels, tiny_config, min_foreground=0.1)
    mask = torch.from_numpy(np.moveaxis(brain, 2, 0).copy())
    with_mask = site_quantiles(sampler, slices_per_site=16, brain_mask=mask)
    without = site_quantiles(sampler, slices_per_site=16)
    brightest_brain = max(float(v[brain].max()) for v in volumes)
    assert brightest_brain < 0.9
    assert float(without[0, -1]) == pytest.approx(0.95, abs=1e-3)  # the rim counts without the mask
    assert float(with_mask[0, -1]) <= brightest_brain + 1e-3  # and never with it


def test_a_brain_mask_on_another_grid_is_refused_by_name(tmp_path, toy_data, tiny_config):
    volumes, labels = toy_data
    options = TrainConfig(
        iterations=2,
        batch_size=2,
        log_every=1,
        checkpoint_every=1,
        style_slices_per_site=4,
        loss_weights=dataclasses.replace(LossWeights(), anchor=1.0),
    )
    wrong = np.ones((5, 5, 5), bool)
    with pytest.raises(ValueError, match="brain mask has shape"):
        train(volumes, labels, ["siteA", "siteB"], tiny_config, options, tmp_path, progress=False, brain_mask=wrong)


def test_with_a_brain_mask_each_image_is_moved_by_its_own_quantiles(
    tmp_path, toy_data, tiny_config, anchored_train_config
):
    volumes, labels = toy_data
    bundle = load_bundle(
        train(volumes, labels, ["siteA", "siteB"], tiny_config, anchored_train_config, tmp_path, progress=False)
    )
    quantiles = bundle.site_quantiles()
    assert set(quantiles) == {"siteA", "siteB"} and all(np.all(np.diff(q) >= 0) for q in quantiles.values())
    mask = volumes[0] > -0.95  # the toy volumes' foreground stands in for the template's brain mask
    sampler = _sampler(volumes, labels, tiny_config, min_foreground=anchored_train_config.min_foreground)
    np.testing.assert_allclose(quantiles["siteA"], site_quantiles(sampler, 8)[0].numpy(), atol=0.05)
    shift = quantiles["siteB"] - quantiles["siteA"]
    for volume in volumes[:2]:  # two subjects of one site: two maps, each from the image itself
        plain = bundle.harmonize_with_lookup(volume, "siteB", source_site="siteA")
        moved = bundle.harmonize_with_lookup(volume, "siteB", source_site="siteA", brain_mask=mask)
        (inputs, outputs), site_table = moved.lookup, plain.lookup
        own = np.quantile(volume[mask], np.linspace(0.01, 0.99, 99))
        np.testing.assert_allclose(inputs[1:-1], np.maximum.accumulate(own), atol=1e-5)
        expected = np.maximum.accumulate(np.clip(own + shift, -1, 1))  # kept monotone, in the model range
        np.testing.assert_allclose(outputs[1:-1], expected, atol=1e-5)
        residual = plain.harmonized - apply_lookup(volume, *site_table)  # the network's part is kept as it is
        np.testing.assert_allclose(moved.harmonized, apply_lookup(volume, inputs, outputs) + residual, atol=1e-5)
    assert not np.allclose(
        bundle.harmonize_with_lookup(volumes[0], "siteB", source_site="siteA", brain_mask=mask).lookup[0],
        bundle.harmonize_with_lookup(volumes[1], "siteB", source_site="siteA", brain_mask=mask).lookup[0],
    )


def test_a_bundle_without_site_quantiles_keeps_its_site_curve(small_bundle, toy_data):
    bundle = load_bundle(small_bundle)
    volume = toy_data[0][0]
    assert bundle.site_quantiles() is None
    with_mask = bundle.harmonize_with_lookup(volume, "siteB", source_site="siteA", brain_mask=volume > -0.95)
    without = bundle.harmonize_with_lookup(volume, "siteB", source_site="siteA")
    np.testing.assert_array_equal(with_mask.harmonized, without.harmonized)
