"""Noise matching's measures: the noise-to-contrast ratio, the denoiser, the rule and its record."""

from __future__ import annotations

import numpy as np
import pytest

from bids_harmonize.preproc.noise import NOISIER, denoise, noise_record, noise_to_contrast, should_denoise
from helpers import assert_denoised_alike


def _head(noise: float, seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A two-tissue ball (inner 0.8, outer 0.3, about half each) in a -1 background, with Gaussian
    noise inside."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    brain = radius < 0.85
    clean = np.where(radius < 0.68, 0.8, np.where(brain, 0.3, -1.0))
    noisy = clean + np.where(brain, np.random.default_rng(seed).normal(0, noise, clean.shape), 0.0)
    return (scale * noisy).astype(np.float32), brain


def test_the_noise_to_contrast_ratio_grows_with_the_noise_and_ignores_the_scale():
    quiet, brain = _head(0.03)
    loud, _ = _head(0.12)
    assert noise_to_contrast(loud, brain) > 3 * noise_to_contrast(quiet, brain)
    assert noise_to_contrast(5 * loud, brain) == pytest.approx(noise_to_contrast(loud, brain), rel=1e-4)


def test_denoising_lowers_the_noise_inside_the_brain_and_leaves_the_rest_as_it_was():
    noisy, brain = _head(0.12)
    denoised = denoise(noisy, brain)
    assert denoised.shape == noisy.shape and denoised.dtype == np.float32
    np.testing.assert_array_equal(denoised[~brain], noisy[~brain])
    assert noise_to_contrast(denoised, brain) < 0.7 * noise_to_contrast(noisy, brain)
    assert_denoised_alike(denoise(noisy, brain), denoised, scale=2.0)  # model range
    with pytest.raises(ValueError, match="selects no voxel"):
        denoise(noisy, np.zeros_like(brain))


def test_only_a_clearly_noisier_source_is_denoised_and_the_record_says_why():
    assert should_denoise(NOISIER * 0.1 + 1e-6, 0.1)
    assert not should_denoise(NOISIER * 0.1, 0.1) and not should_denoise(0.05, 0.1)
    assert not should_denoise(None, 0.1) and not should_denoise(0.3, None)  # a bundle without noise records
    record = noise_record("noisy", "quiet", {"noisy": 0.3, "quiet": 0.1})
    assert record["Denoised"] is True and record["SourceNoiseToContrast"] == 0.3
    assert str(NOISIER) in record["Rule"]
    assert noise_record("quiet", "noisy", {"noisy": 0.3, "quiet": 0.1})["Denoised"] is False
