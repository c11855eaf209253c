"""The population anatomy on a simulation grid: tissue fractions, brain mask, texture, ventricles.

Everything comes from real template data: ICBM 2009c symmetric T1w, T2w and brain mask
(`bids_harmonize.templates`), ICBM 2009a symmetric GM/WM probability maps (nilearn), resampled
by their affines onto one grid in MNI152NLin2009cSym space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import nibabel as nb
import numpy as np
from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template
from numpy.typing import NDArray
from scipy import ndimage

from bids_harmonize.templates import DEFAULT_TEMPLATE, get_template

TEMPLATE_SPACE = DEFAULT_TEMPLATE
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
# How strongly the template's own intensity deviations modulate T1 and T2 of GM and WM
# (roughly the inverse of the sequences' sensitivity d ln S / d ln T).
TEXTURE_GAIN_T1 = 0.6
TEXTURE_GAIN_T2 = 0.5
TEXTURE_LIMIT = 0.25
VENTRICLE_DEPTH_MM = 20.0

Array = NDArray[np.float32]


@dataclass(frozen=True)
class Grid:
    """A voxel grid: array shape and voxel-to-world (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    @property
    def spacing_mm(self) -> NDArray[np.float64]:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


@dataclass(frozen=True)
class TemplateAnatomy:
    """Population anatomy on `grid`.

    `fractions` holds per-voxel volume fractions of CSF, GM, WM, fat and muscle (the rest is air
    or bone, which give no signal); `t1_texture`/`t2_texture` are relative deviations of the
    template's T1w/T2w intensity from what its tissue fractions predict (deep grey nuclei, tracts).
    """

    grid: Grid
    fractions: dict[str, Array]
    brain_mask: Array
    t1_texture: Array
    t2_texture: Array
    ventricles: NDArray[np.bool_]


def template_grid(resolution_mm: float) -> Grid:
    """The template's 1 mm field of view sampled every `resolution_mm` (2 mm: TemplateFlow res-2)."""
    reference = nb.load(get_template(resolution=1, suffix="T1w"))
    shape = tuple(int(n // resolution_mm) for n in reference.shape[:3])
    affine = reference.affine.copy()
    affine[:3, :3] *= resolution_mm
    affine[:3, 3] += reference.affine[:3, :3] @ np.full(3, (resolution_mm - 1.0) / 2.0)
    return Grid(shape, affine)


def resample_to_grid(image: nb.Nifti1Image, grid: Grid, order: int = 1) -> Array:
    """Resample `image` onto `grid` by world coordinates, low-pass filtering first when the grid
    is coarser than the image so that partial volumes are averaged, not aliased."""
    data = np.asarray(image.dataobj, dtype=np.float32)
    source_spacing = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    extra_fwhm = np.sqrt(np.clip(grid.spacing_mm**2 - source_spacing**2, 0, None))
    if extra_fwhm.any():
        data = ndimage.gaussian_filter(data, extra_fwhm / FWHM_PER_SIGMA / source_spacing)
    grid_to_source = np.linalg.inv(image.affine) @ grid.affine
    return ndimage.affine_transform(
        data, grid_to_source, output_shape=grid.shape, order=order, mode="constant", cval=0.0
    )


def _brain_fractions(grid: Grid, brain: Array) -> dict[str, Array]:
    grey = np.clip(resample_to_grid(load_mni152_gm_template(resolution=1), grid), 0, 1)
    white = np.clip(resample_to_grid(load_mni152_wm_template(resolution=1), grid), 0, 1)
    parenchyma = np.maximum(grey + white, 1.0)
    grey, white = grey / parenchyma * brain, white / parenchyma * brain
    return {"CSF": np.clip(brain - grey - white, 0, 1), "GM": grey, "WM": white}


def _head_fractions(t1w: Array, t2w: Array, brain: Array, tissue: dict[str, Array]) -> dict[str, Array]:
    """Non-brain tissue from the template intensities: bright on T1w -> fat, intermediate ->
    muscle, dark on T1w but bright on T2w -> fluid (eyes, extra-axial CSF), dark on both -> bone
    or air."""
    t1_rel = t1w / np.median(t1w[tissue["WM"] > 0.9])
    t2_rel = t2w / np.median(t2w[tissue["CSF"] > 0.9])
    outside = 1.0 - brain
    fluid = np.clip(t2_rel - t1_rel, 0, 1)
    soft_tissue = np.clip(t1_rel / 0.8, 0, 1) * (1 - fluid)
    fat_share = np.clip((t1_rel - 0.6) / 0.4, 0, 1)
    return {
        "CSF": tissue["CSF"] + fluid * outside,
        "GM": tissue["GM"],
        "WM": tissue["WM"],
        "fat": soft_tissue * fat_share * outside,
        "muscle": soft_tissue * (1 - fat_share) * outside,
    }


def _texture(intensity: Array, fractions: dict[str, Array], brain: Array) -> Array:
    """Relative deviation of `intensity` from a per-tissue constant fit (least squares) inside
    the brain, limited to +-TEXTURE_LIMIT."""
    inside = brain > 0.99
    design = np.stack([fractions[name][inside] for name in ("CSF", "GM", "WM")], axis=1)
    tissue_means, *_ = np.linalg.lstsq(design, intensity[inside], rcond=None)
    predicted = sum(fractions[name] * mean for name, mean in zip(("CSF", "GM", "WM"), tissue_means, strict=True))
    texture = np.zeros_like(intensity)
    valid = inside & (predicted > 0.05 * predicted.max())
    texture[valid] = intensity[valid] / predicted[valid] - 1.0
    return np.clip(texture, -TEXTURE_LIMIT, TEXTURE_LIMIT).astype(np.float32)


def _ventricles(csf: Array, brain: Array, grid: Grid) -> NDArray[np.bool_]:
    """Deep CSF: the largest connected pieces of CSF at least VENTRICLE_DEPTH_MM inside the brain."""
    depth = ndimage.distance_transform_edt(brain > 0.5, sampling=grid.spacing_mm)
    labels, count = ndimage.label((csf > 0.6) & (depth > VENTRICLE_DEPTH_MM))
    if count == 0:
        return np.zeros(grid.shape, dtype=bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    keep = 1 + np.flatnonzero(sizes >= 0.2 * sizes.max())
    return np.isin(labels, keep)


@lru_cache(maxsize=2)
def load_template_anatomy(resolution_mm: float = 2.0) -> TemplateAnatomy:
    """Population anatomy on the template grid of `resolution_mm` (cached per process)."""
    grid = template_grid(resolution_mm)
    brain = np.clip(resample_to_grid(nb.load(get_template(resolution=1, suffix="mask", desc="brain")), grid), 0, 1)
    t1w = resample_to_grid(nb.load(get_template(resolution=1, suffix="T1w")), grid)
    t2w = resample_to_grid(nb.load(get_template(resolution=1, suffix="T2w")), grid)
    brain_tissue = _brain_fractions(grid, brain)
    fractions = _head_fractions(t1w, t2w, brain, brain_tissue)
    fractions = {name: f.astype(np.float32) for name, f in fractions.items()}
    return TemplateAnatomy(
        grid=grid,
        fractions=fractions,
        brain_mask=brain.astype(np.float32),
        t1_texture=_texture(t1w, brain_tissue, brain),
        t2_texture=_texture(t2w, brain_tissue, brain),
        ventricles=_ventricles(brain_tissue["CSF"], brain, grid),
    )
