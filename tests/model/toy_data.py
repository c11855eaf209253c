"""Seeded two-site toy volumes: the same kind of anatomy under two different intensity mappings.

Each volume is a random ellipsoidal 'head' with three nested tissue classes (CSF-, GM- and
WM-like intensities) and gentle smooth variation. Site A shows the anatomy with T1-like contrast;
site B shows the same kind of anatomy through a gamma curve and a compressed range. The change is
monotone, like a scanner effect within one contrast (a T1w/T2w inversion is a change of
contrast, for which MURD trains separate models).
Volumes are in NIfTI voxel order (x, y, z): axial slices along the last axis.
"""

from __future__ import annotations

import numpy as np

SHAPE = (28, 30, 12)
TISSUE_INTENSITY = (0.3, 0.6, 0.9)  # outer to inner shell, site A, in [0, 1]


def anatomy(rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Tissue intensities in [0, 1] (0 = background) of one random head, site-A contrast."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    centre = rng.uniform(-0.08, 0.08, size=3)
    radii = rng.uniform(0.72, 0.92, size=3) * np.array([1.0, 1.0, 1.1])
    radius = np.sqrt((((grid - centre) / radii) ** 2).sum(-1))
    volume = np.zeros(shape, dtype=np.float32)
    for shell, intensity in zip((1.0, 0.8, 0.55), TISSUE_INTENSITY):
        shell_scale = shell * rng.uniform(0.9, 1.1)
        volume[radius <= shell_scale] = intensity
    ripple = 0.04 * np.sin(grid[..., 0] * rng.uniform(2, 5) + grid[..., 1] * rng.uniform(2, 5))
    return np.where(volume > 0, np.clip(volume + ripple, 0.05, 1.0), 0.0).astype(np.float32)


def site_a(tissue: np.ndarray) -> np.ndarray:
    return (2 * tissue - 1).astype(np.float32)


def site_b(tissue: np.ndarray) -> np.ndarray:
    """Gamma 2 and a compressed range: darker, lower-contrast tissue, background unchanged."""
    mapped = np.where(tissue > 0, 0.1 + 0.8 * tissue**2, 0.0)
    return (2 * mapped - 1).astype(np.float32)


def two_site_volumes(per_site: int = 4, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """`per_site` volumes of site A (label 0) then `per_site` of site B (label 1), all distinct."""
    rng = np.random.default_rng(seed)
    volumes = [site_a(anatomy(rng)) for _ in range(per_site)] + [site_b(anatomy(rng)) for _ in range(per_site)]
    return volumes, [0] * per_site + [1] * per_site


def tissue_labels(tissue: np.ndarray) -> np.ndarray:
    """0 for background, else 1..3: the tissue class whose nominal intensity is nearest."""
    nearest = np.abs(tissue[..., None] - np.array(TISSUE_INTENSITY)).argmin(-1) + 1
    return np.where(tissue > 0, nearest, 0)


def tissue_means(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean intensity of each tissue class (1..3)."""
    return np.array([image[labels == label].mean() for label in (1, 2, 3)])
