"""Noise matching: a source site clearly noisier than the target, for its tissue contrast, is
denoised before its intensity map.

An intensity map moves each tissue's intensities but keeps the image's noise, and a segmenter's
spatial prior (Atropos's Markov random field) labels a noisy image differently from a clean one
with the same histogram. On the downstream benchmark even the oracle map (each scan matched to the
same subject's scan at the target site) left the low-SNR 1.5 T site's WM volume +2.7 % off; with
the scan denoised first (non-local means), +0.95 % (a probe; docs/model.md, "Noise matching").

Each site's noise-to-contrast ratio (the median over its training volumes) goes into the bundle's
card, and for every site noisier than the quietest one so does the shift that denoising brings
to its anchor quantiles (model/styles.py, site_noise), so the denoised image is moved by a site
difference measured on denoised images. The denoiser is ANTs' non-local means (antspyx),
run inside the brain; repeatable but for ITK's threads, which under load leave a few voxels in
10,000 apart (once one of them by 0.74: tests/preproc/test_noise.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# A source whose noise-to-contrast ratio exceeds the target's by this factor is denoised first.
NOISIER = 1.25


def noise_to_contrast(volume: np.ndarray, brain_mask: np.ndarray) -> float:
    """The image's noise over its tissue contrast, both inside the brain: the robust standard
    deviation (1.4826 x MAD) of what a 3x3x3 median filter removes, over the interquartile range
    of the brain's intensities. Unitless, so it compares sites whatever their intensity scale."""
    volume = np.asarray(volume, np.float32)
    brain = np.asarray(brain_mask, bool)
    inner = ndimage.binary_erosion(brain, iterations=2)
    inner = inner if inner.any() else brain  # a thin mask: the edges must do
    high_pass = (volume - ndimage.median_filter(volume, size=3))[inner]
    noise = 1.4826 * float(np.median(np.abs(high_pass - np.median(high_pass))))
    low, high = np.quantile(volume[brain], [0.25, 0.75])
    return noise / max(float(high - low), 1e-6)


def denoise(volume: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """Non-local means (ANTs DenoiseImage, Gaussian noise model) inside the brain; every voxel
    outside it is returned unchanged. Same shape, float32."""
    import ants

    volume = np.asarray(volume, np.float32)
    brain = np.asarray(brain_mask, bool)
    if not brain.any():
        raise ValueError("the brain mask selects no voxel of the volume: nothing to denoise")
    floor = float(volume.min())  # the filter expects non-negative intensities
    denoised = ants.denoise_image(
        ants.from_numpy(volume - floor), ants.from_numpy(brain.astype(np.float32)), noise_model="Gaussian"
    ).numpy()
    return np.where(brain, denoised + floor, volume).astype(np.float32)


def should_denoise(source_ratio: float | None, target_ratio: float | None) -> bool:
    """Whether an image of the source site is denoised before it is moved to the target site."""
    if source_ratio is None or target_ratio is None:
        return False  # a bundle without noise records: maps as it was trained to
    return source_ratio > NOISIER * target_ratio


def noise_record(source: str, target: str, ratios: dict[str, float]) -> dict[str, object]:
    """What the harmonized image's sidecar says about noise matching, and why."""
    denoised = should_denoise(ratios.get(source), ratios.get(target))
    return {
        "Denoised": denoised,
        "SourceNoiseToContrast": ratios.get(source),
        "TargetNoiseToContrast": ratios.get(target),
        "Rule": f"non-local means (ANTs) when the source's noise-to-contrast ratio exceeds the target's x {NOISIER}",
    }
