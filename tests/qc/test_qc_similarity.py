"""SSIM, PSNR and MAE on cases with known answers."""

import numpy as np
import pytest
from scipy import ndimage

from bids_harmonize.qc import robust_rescale, similarity


@pytest.fixture
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """A smooth structured image and a spherical mask."""
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.normal(size=(56, 56, 48)), 3) * 100 + 500
    centre = np.array(image.shape) / 2
    mask = np.linalg.norm(np.indices(image.shape) - centre[:, None, None, None], axis=0) < 22
    return image, mask


def test_identical_images_score_perfectly(phantom) -> None:
    image, mask = phantom
    scores = similarity(image, image.copy(), mask)
    assert scores.ssim == pytest.approx(1.0)
    assert scores.mae == 0.0
    assert scores.psnr == np.inf


def test_pure_noise_has_low_ssim(phantom) -> None:
    """Not 0: windows at the mask edge see the same empty surround in both images."""
    image, mask = phantom
    noise = np.random.default_rng(1).normal(500, 50, image.shape)
    scores = similarity(noise, image, mask)
    assert scores.ssim < 0.25
    assert scores.psnr < 15


def test_known_shift_gives_that_mae_without_normalisation(phantom) -> None:
    image, mask = phantom
    scores = similarity(image + 7.0, image, mask, normalize=False)
    assert scores.mae == pytest.approx(7.0)
    data_range = image[mask].max() - image[mask].min()
    assert scores.psnr == pytest.approx(20 * np.log10(data_range / 7.0))


def test_normalisation_ignores_global_scale_and_offset(phantom) -> None:
    image, mask = phantom
    scores = similarity(3.0 * image + 40.0, image, mask)
    assert scores.ssim == pytest.approx(1.0, abs=1e-5)
    assert scores.mae == pytest.approx(0.0, abs=1e-5)


def test_only_the_mask_counts(phantom) -> None:
    image, mask = phantom
    changed_outside = np.where(mask, image, 0.0)
    scores = similarity(changed_outside, image, mask)
    assert scores.ssim == pytest.approx(1.0, abs=1e-6)  # SSIM windows reach outside the mask
    assert scores.mae == 0.0


def test_robust_rescale_maps_percentiles_to_unit_range(phantom) -> None:
    image, mask = phantom
    rescaled = robust_rescale(image, mask)
    assert np.percentile(rescaled[mask], [1, 99]) == pytest.approx([0.0, 1.0], abs=1e-5)
    with pytest.raises(ValueError):
        robust_rescale(np.ones_like(image), mask)
