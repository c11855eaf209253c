"""Site classifier and between-site histogram distance on sites with known differences."""

import numpy as np
import pytest
from scipy import ndimage

from bids_harmonize.qc import between_site_wasserstein, site_classifier_accuracy


def _mask(shape: tuple[int, int, int]) -> np.ndarray:
    centre = np.array(shape) / 2
    return np.linalg.norm(np.indices(shape) - centre[:, None, None, None], axis=0) < min(shape) / 2 - 1


def _brain_like(rng: np.random.Generator, shape=(32, 32, 16), noise: float = 0.02, gamma: float = 1.0) -> np.ndarray:
    """Smooth two-tissue pattern with a site-specific contrast curve (gamma) and noise level."""
    tissue = ndimage.gaussian_filter(rng.normal(size=shape), 2) > 0
    image = np.where(tissue, 1.0, 0.6) ** gamma
    return ndimage.gaussian_filter(image, 1) + rng.normal(0, noise, shape)


def test_wasserstein_of_shifted_distributions_is_the_shift() -> None:
    rng = np.random.default_rng(0)
    shape = (20, 20, 20)
    mask = np.ones(shape, dtype=bool)
    images = [rng.normal(100, 10, shape) for _ in range(2)]
    shifted = [image + 5.0 for image in images]
    distance = between_site_wasserstein(images + shifted, [mask] * 4, ["a", "a", "b", "b"], normalize=False)
    assert distance == pytest.approx(5.0, abs=0.05)


def test_wasserstein_is_zero_for_identical_sites() -> None:
    image = np.random.default_rng(1).normal(size=(10, 10, 10))
    mask = np.ones(image.shape, dtype=bool)
    assert between_site_wasserstein([image, image], [mask, mask], ["a", "b"]) == pytest.approx(0.0)


def test_classifier_finds_separable_sites() -> None:
    rng = np.random.default_rng(2)
    shape = (32, 32, 16)
    images = [_brain_like(rng, shape, 0.02, 1.0) for _ in range(4)] + [
        _brain_like(rng, shape, 0.10, 3.0) for _ in range(4)
    ]
    result = site_classifier_accuracy(images, [_mask(shape)] * 8, ["a"] * 4 + ["b"] * 4)
    assert result.accuracy > 0.9
    assert result.chance == pytest.approx(0.5)
    assert result.n_images == 8 and result.n_samples > 8


def test_classifier_is_near_chance_for_identical_sites() -> None:
    rng = np.random.default_rng(3)
    shape = (32, 32, 16)
    images = [_brain_like(rng, shape) for _ in range(8)]
    result = site_classifier_accuracy(images, [_mask(shape)] * 8, ["a", "b"] * 4)
    assert result.accuracy < 0.7


def test_classifier_needs_two_images_per_site() -> None:
    image = np.ones((8, 8, 8))
    with pytest.raises(ValueError):
        site_classifier_accuracy([image, image, image], [image > 0] * 3, ["a", "a", "b"])
