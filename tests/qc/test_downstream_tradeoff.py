"""benchmarks/downstream_tradeoff.py: its two ends are MURD's per-image map and one histogram for
every image (synthetic values; nothing segmented)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_loader import benchmark_module

from bids_harmonize.model.anchors import QUANTILE_LEVELS, image_lookup
from bids_harmonize.model.curves import apply_lookup

LEVELS = QUANTILE_LEVELS.numpy()


@pytest.fixture(scope="module")
def tradeoff():
    pytest.importorskip("neuroCombat")  # downstream.py, which it builds on, imports it
    yield from benchmark_module("downstream_tradeoff")


def image(seed: int, centre: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.clip(rng.normal(centre, 0.2, (16, 16, 16)), -0.95, 0.95).astype(np.float32)
    return values, np.ones(values.shape, bool)


def test_alpha_zero_is_murds_own_map(tradeoff):
    values, mask = image(0, 0.1)
    source, target = np.quantile(values, LEVELS), np.quantile(values, LEVELS) + 0.05
    expected = image_lookup(values, mask, source, target)
    blended = tradeoff.blended_lookup(values, mask, target - source, np.zeros_like(LEVELS), 0.0)
    np.testing.assert_allclose(blended[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(blended[1], expected[1], atol=1e-6)


def test_alpha_one_gives_two_different_images_the_same_histogram(tradeoff):
    pooled = np.quantile(image(9, -0.2)[0], LEVELS)
    outputs = []
    for seed, centre in ((1, 0.3), (2, -0.1)):
        values, mask = image(seed, centre)
        mapped = apply_lookup(values, *tradeoff.blended_lookup(values, mask, np.zeros_like(LEVELS), pooled, 1.0))
        outputs.append(np.quantile(mapped, LEVELS))
    np.testing.assert_allclose(outputs[0], pooled, atol=2e-3)
    np.testing.assert_allclose(outputs[1], pooled, atol=2e-3)


def test_halfway_lies_between_the_ends(tradeoff):
    values, mask = image(3, 0.2)
    pooled = np.quantile(image(4, -0.3)[0], LEVELS)

    def quantiles_at(alpha: float) -> np.ndarray:
        return np.quantile(apply_lookup(values, *tradeoff.blended_lookup(values, mask, 0.0, pooled, alpha)), LEVELS)

    np.testing.assert_allclose(quantiles_at(0.5), (quantiles_at(0.0) + quantiles_at(1.0)) / 2, atol=2e-3)
