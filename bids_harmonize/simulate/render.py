"""From a subject and a site to images: the ground-truth render and the native acquisition.

Ground truth (template grid): tissue signal -> site resolution (PSF blur) -> vendor scaling.
Acquisition (native grid):    tissue signal -> PSF blur -> head pose + field of view
                              -> receive bias -> Rician noise -> vendor scaling -> 12-bit integers.
"""

from __future__ import annotations

import nibabel as nb
import numpy as np
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform
from numpy.typing import NDArray
from scipy import ndimage

from bids_harmonize.simulate.anatomy import FWHM_PER_SIGMA, TEXTURE_GAIN_T1, TEXTURE_GAIN_T2, Array, Grid
from bids_harmonize.simulate.fields import random_polynomial_field
from bids_harmonize.simulate.sites import Protocol, Site
from bids_harmonize.simulate.subjects import Subject
from bids_harmonize.simulate.tissues import BRAIN_TISSUES, TISSUES

MAX_STORED_VALUE = 4095  # 12-bit scanners
BIAS_POLYNOMIAL_DEGREE = 3
FOV_MARGIN_MM = 4.0


def tissue_signal(subject: Subject, site: Site, contrast: str) -> Array:
    """Noise-free signal per unit proton density of water, partial volumes mixed per compartment.

    GM and WM relaxation times carry the subject's scaling and the template-derived texture.
    """
    sequence = site.protocols[contrast].sequence
    total = np.zeros(subject.brain_mask.shape, dtype=np.float32)
    for name, fraction in subject.fractions.items():
        tissue = TISSUES[name]
        t1, t2 = tissue.relaxation(site.field_strength_t)
        t1_scale, t2_scale = subject.relaxation_scale.get(name, (1.0, 1.0))
        t1, t2 = t1 * t1_scale, t2 * t2_scale
        if name in ("GM", "WM"):
            t1 = t1 * np.exp(-TEXTURE_GAIN_T1 * subject.t1_texture)
            t2 = t2 * np.exp(TEXTURE_GAIN_T2 * subject.t2_texture)
        total += fraction * np.float32(tissue.proton_density) * sequence.signal(t1, t2).astype(np.float32)
    return total


def brightest_brain_signal(site: Site, contrast: str) -> float:
    """Signal of the brightest pure brain tissue with nominal relaxation times: the reference for
    vendor scaling and noise level (WM on T1w, CSF on T2w)."""
    sequence = site.protocols[contrast].sequence
    signals = []
    for name in BRAIN_TISSUES:
        tissue = TISSUES[name]
        signals.append(tissue.proton_density * float(sequence.signal(*tissue.relaxation(site.field_strength_t))))
    return max(signals)


def vendor_gain(site: Site, contrast: str) -> float:
    return site.white_level / brightest_brain_signal(site, contrast)


def blur_to_protocol(signal: Array, protocol: Protocol, grid: Grid) -> Array:
    """Gaussian point-spread function with FWHM = voxel size (slice thickness across slices),
    less the grid's own resolution. The template grid's axes are R, A, S, like the protocol's."""
    extra_fwhm = np.sqrt(np.clip(np.square(protocol.voxel_size_mm) - grid.spacing_mm**2, 0, None))
    if not extra_fwhm.any():
        return signal
    return ndimage.gaussian_filter(signal, extra_fwhm / FWHM_PER_SIGMA / grid.spacing_mm)


def render_ground_truth(subject: Subject, site: Site, contrast: str, grid: Grid) -> Array:
    """`subject` as `site` images it, on the template grid: contrast, resolution and intensity
    scale of the site, no noise, no bias field."""
    blurred = blur_to_protocol(tissue_signal(subject, site, contrast), site.protocols[contrast], grid)
    return (blurred * vendor_gain(site, contrast) + site.intensity_offset).astype(np.float32)


def add_rician_noise(image: NDArray, sigma: float, rng: np.random.Generator, offset: float = 0.0) -> Array:
    """Magnitude of (image - offset) plus complex Gaussian noise of std `sigma`, plus `offset`."""
    real = image - offset + rng.normal(0.0, sigma, image.shape)
    imaginary = rng.normal(0.0, sigma, image.shape)
    return (np.hypot(real, imaginary) + offset).astype(np.float32)


def noise_sigma(site: Site) -> float:
    """Noise std in stored intensity units (relative to the site's white level)."""
    return site.noise_fraction * site.white_level


def _brain_extent_in_scanner(subject: Subject, template_grid: Grid) -> tuple[NDArray, NDArray]:
    """Lowest and highest scanner coordinates (RAS mm) of the corners of the brain's bounding box."""
    brain_voxels = np.argwhere(subject.brain_mask)
    corners = np.array([brain_voxels.min(axis=0), brain_voxels.max(axis=0)], dtype=float)
    corners = np.array(np.meshgrid(*corners.T, indexing="ij")).reshape(3, -1)
    to_scanner = subject.pose.template_to_scanner() @ template_grid.affine
    scanner = to_scanner[:3, :3] @ corners + to_scanner[:3, 3:4]
    return scanner.min(axis=1), scanner.max(axis=1)


def _in_stored_orientation(affine_ras: NDArray, shape_ras: NDArray, orientation: str) -> Grid:
    """The same grid with its array axes permuted and flipped to `orientation` (axis codes)."""
    to_stored = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(orientation)))
    stored_shape = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(to_stored):
        stored_shape[int(new_axis)] = int(shape_ras[axis])
    return Grid(tuple(stored_shape), affine_ras @ inv_ornt_aff(to_stored, tuple(shape_ras)))


def native_grid(protocol: Protocol, subject: Subject, template_grid: Grid) -> Grid:
    """The acquisition grid in scanner coordinates: the protocol's field of view centred on the
    brain, shifted by the subject's random offset as far as the whole brain stays inside, stored
    in the protocol's axis order."""
    low, high = _brain_extent_in_scanner(subject, template_grid)
    fov = np.asarray(protocol.field_of_view_mm)
    room = np.clip(fov / 2 - (high - low) / 2 - FOV_MARGIN_MM, 0, None)
    shift = np.clip(np.asarray(subject.pose.field_of_view_shift_mm), -room, room)
    centre = (low + high) / 2 + shift

    voxel = np.asarray(protocol.voxel_size_mm)
    shape_ras = np.maximum(np.round(fov / voxel).astype(int), 1)
    affine_ras = np.diag([*voxel, 1.0])
    affine_ras[:3, 3] = centre - voxel * (shape_ras - 1) / 2
    return _in_stored_orientation(affine_ras, shape_ras, protocol.orientation)


def receive_bias(grid: Grid, amplitude: float, rng: np.random.Generator) -> Array:
    """Smooth multiplicative field over the field of view, largest |log gain| = `amplitude`."""
    return np.exp(amplitude * random_polynomial_field(grid.shape, BIAS_POLYNOMIAL_DEGREE, rng))


def _to_native(volume: Array, subject: Subject, template_grid: Grid, grid: Grid) -> Array:
    """A template-grid volume seen through the subject's head pose on a native grid (linear)."""
    native_to_template = (
        np.linalg.inv(template_grid.affine) @ np.linalg.inv(subject.pose.template_to_scanner()) @ grid.affine
    )
    return ndimage.affine_transform(volume, native_to_template, output_shape=grid.shape, order=1, cval=0.0)


def render_native_truth(
    subject: Subject, scanned_at: Site, target: Site, contrast: str, template_grid: Grid
) -> tuple[nb.Nifti1Image, nb.Nifti1Image]:
    """`subject` as `target` would render it, on the native grid of its scan at `scanned_at`.

    The grid, head pose and resolution (PSF) are those of the real scan; the contrast and the
    intensity scale are the target site's; no bias field, no noise. This is what a harmonized
    native output should look like. Returns the image and the brain mask on that grid.
    """
    protocol = scanned_at.protocols[contrast]
    blurred = blur_to_protocol(tissue_signal(subject, target, contrast), protocol, template_grid)
    grid = native_grid(protocol, subject, template_grid)
    image = _to_native(blurred, subject, template_grid, grid) * vendor_gain(target, contrast) + target.intensity_offset
    mask = _to_native(subject.brain_mask.astype(np.float32), subject, template_grid, grid) > 0.5
    return (
        nb.Nifti1Image(image.astype(np.float32), grid.affine),
        nb.Nifti1Image(mask.astype(np.uint8), grid.affine),
    )


def acquire(
    subject: Subject, site: Site, contrast: str, template_grid: Grid, rng: np.random.Generator
) -> nb.Nifti1Image:
    """The image `site` stores when it scans `subject`: native grid and orientation, int16."""
    protocol = site.protocols[contrast]
    blurred = blur_to_protocol(tissue_signal(subject, site, contrast), protocol, template_grid)
    grid = native_grid(protocol, subject, template_grid)
    signal = _to_native(blurred, subject, template_grid, grid)
    signal *= receive_bias(grid, site.bias_amplitude, rng)
    noisy = add_rician_noise(signal, site.noise_fraction * brightest_brain_signal(site, contrast), rng)
    stored = np.clip(np.round(noisy * vendor_gain(site, contrast) + site.intensity_offset), 0, MAX_STORED_VALUE)
    image = nb.Nifti1Image(stored.astype(np.int16), grid.affine)
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image
