"""Noise matching in a bundle: what training records per site, and which translations denoise."""

from __future__ import annotations

import numpy as np
import pytest

from bids_harmonize.model import load_bundle, train
from bids_harmonize.model.anchors import image_lookup
from bids_harmonize.preproc.noise import noise_to_contrast
from tests.model.toy_data import two_site_volumes


@pytest.fixture(scope="module")
def noisy_site_bundle(tmp_path_factory, tiny_config, anchored_train_config):
    """Site B's volumes carry strong noise inside the head; site A's are clean."""
    volumes, labels = two_site_volumes(per_site=3, seed=4)
    rng = np.random.default_rng(1)
    volumes = [
        np.clip(np.where(v > -0.95, v + rng.normal(0, 0.12 if label else 0.0, v.shape), v), -1, 1).astype(np.float32)
        for v, label in zip(volumes, labels)
    ]
    mask = np.mean([v > -0.95 for v in volumes], axis=0) >= 0.5
    out = tmp_path_factory.mktemp("noisy_bundle")
    bundle_dir = train(
        volumes, labels, ["siteA", "siteB"], tiny_config, anchored_train_config, out, progress=False, brain_mask=mask
    )
    return load_bundle(bundle_dir), volumes, mask


def test_the_card_keeps_each_sites_noise_and_the_noisy_sites_denoised_shift(noisy_site_bundle):
    bundle, _, _ = noisy_site_bundle
    ratios = bundle.noise_ratios()
    assert set(ratios) == {"siteA", "siteB"} and ratios["siteB"] > 2 * ratios["siteA"]
    sites = {site["name"]: site for site in bundle.card["sites"]}
    assert "denoised_shift" in sites["siteB"] and "denoised_shift" not in sites["siteA"]
    assert len(sites["siteB"]["denoised_shift"]) == len(sites["siteB"]["quantiles"])
    assert bundle.denoises("siteB", "siteA") and not bundle.denoises("siteA", "siteB")


def test_a_noisy_source_is_denoised_then_moved_by_the_denoised_site_difference(noisy_site_bundle):
    bundle, volumes, mask = noisy_site_bundle
    noisy = volumes[3]  # site B
    moved = bundle.harmonize_with_lookup(noisy, "siteA", source_site="siteB", brain_mask=mask)
    assert moved.denoised
    np.testing.assert_array_equal(moved.lookup_input[~mask], noisy[~mask])
    assert noise_to_contrast(moved.lookup_input, mask) < 0.8 * noise_to_contrast(noisy, mask)
    quantiles, entry = bundle.site_quantiles(), bundle.card["sites"][1]
    source = quantiles["siteB"] + np.asarray(entry["denoised_shift"])
    expected = image_lookup(moved.lookup_input, mask, source, quantiles["siteA"])
    for got, want in zip(moved.lookup, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # The other way, and without a brain mask, nothing is denoised.
    clean = bundle.harmonize_with_lookup(volumes[0], "siteB", source_site="siteA", brain_mask=mask)
    assert not clean.denoised and clean.lookup_input is not None
    np.testing.assert_array_equal(clean.lookup_input, volumes[0])
    assert not bundle.harmonize_with_lookup(noisy, "siteA", source_site="siteB").denoised
