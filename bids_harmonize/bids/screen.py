"""Is an image usable at all? Checks that run before any work starts, each naming the file.

Discovery reads headers only (``read_header_geometry``, cheap for 10,000 files). Before a
participant or group run processes images, ``screen_images`` reads each selected image once
and leaves out, with the reason and the fix, what preprocessing could only crash on or turn
into a meaningless output: truncated files, 4D series, images with no finite or no varying
values, grids too small to hold a head, and images that are not heads (too few voxels above
the background, or noise without spatial structure). The rest of the run goes on.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_harmonize.bids.records import ImageRecord

LOGGER = logging.getLogger("bids_harmonize.discovery")
# A head fits in neither fewer voxels nor a smaller field of view than this along any axis;
# 2D scans with thick slices (5 mm x 30 slices) still pass.
MIN_VOXELS_PER_AXIS = 16
MIN_FIELD_OF_VIEW_MM = 100.0
# Not a head (see not_a_head): too few voxels above the background, or no spatial structure.
MIN_FOREGROUND_SHARE = 0.01
MIN_NEIGHBOUR_CORRELATION = 0.3


def read_header_geometry(path: Path) -> tuple[list[int], list[float]]:
    """Shape and voxel size (first three axes) from the NIfTI-1/2 header alone.

    Reading only the header block is ~7x faster than ``nibabel.load`` (0.08 vs 0.6 ms per
    file), which matters when a cold run meets 10,000 images. Raises ValueError when the file
    is empty, truncated or not NIfTI.
    """
    import gzip
    import zlib

    import nibabel as nb

    if path.stat().st_size == 0:
        raise ValueError("the file is empty (0 bytes)")
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as handle:
            block = handle.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot be decompressed or read ({err})") from err
    header_class = None
    for order in ("little", "big"):
        size = int.from_bytes(block[:4], order)
        header_class = {348: nb.Nifti1Header, 540: nb.Nifti2Header}.get(size)
        if header_class is not None:
            break
    if header_class is None or len(block) < size:
        raise ValueError("not a NIfTI-1/2 file (bad or truncated header)")
    header = header_class(binaryblock=block[:size], check=False)
    shape = [int(s) for s in header.get_data_shape()[:3]]
    zooms = [float(z) for z in header.get_zooms()[:3]]
    if len(shape) < 3 or min(shape) < 1 or min(zooms) <= 0:
        raise ValueError(f"not a 3D image (shape {shape}, voxel size {zooms})")
    return shape, zooms


@dataclass
class Screened:
    usable: list[ImageRecord]
    rejected: list[str]  # "relpath: why. Fix: ..."


def image_problem(path: Path) -> str | None:
    """Why the image at ``path`` cannot be harmonized, or None when it can."""
    import nibabel as nb

    try:
        img = nb.load(path)
        shape = img.shape
        if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
            return (
                f"is a 4D image of shape {tuple(shape)}, not one 3D volume. Fix: split it into one file per "
                "volume (e.g. with run-<index> entities), or leave it out with .bidsignore"
            )
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
    except Exception as err:  # nibabel/gzip/zlib raise many types for truncated or corrupt files
        return (
            f"cannot be read ({err.__class__.__name__}: {err}); it is probably truncated or corrupt. Fix: "
            "convert or copy it again from the source data"
        )
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    fov = [n * z for n, z in zip(shape[:3], zooms)]
    if min(shape[:3]) < MIN_VOXELS_PER_AXIS or min(fov) < MIN_FIELD_OF_VIEW_MM:
        return (
            f"is too small to hold a head ({'x'.join(map(str, shape[:3]))} voxels of "
            f"{'x'.join(f'{z:g}' for z in zooms)} mm). Fix: check the conversion; bids_harmonize needs at least "
            f"{MIN_VOXELS_PER_AXIS} voxels and {MIN_FIELD_OF_VIEW_MM:g} mm along every axis"
        )
    finite = np.isfinite(data)
    if not finite.any():
        return "holds no finite value (all NaN or infinite). Fix: convert it again from the source data"
    values = data[finite]
    if values.min() == values.max():
        return (
            f"has the same value ({values.min():g}) in every voxel, so no image content. Fix: convert it "
            "again from the source data"
        )
    return not_a_head(np.where(finite, data, values.min()))


def not_a_head(data: np.ndarray) -> str | None:
    """Why a finite, non-constant volume is not an image of a head, or None.

    A head fills a good part of its grid with values above the background (air), and its
    neighbouring voxels are alike (tissue is smooth at any MR resolution; real heads at
    1-4.8 mm give a correlation of 0.87-0.93 between neighbours, white noise about 0).
    """
    above = int(np.count_nonzero(data > data.min()))
    if above < MIN_FOREGROUND_SHARE * data.size:
        return (
            f"has only {above} voxel(s) above its background value ({data.min():g}) of {data.size}; a head "
            f"fills at least {MIN_FOREGROUND_SHARE:.0%} of its grid. Fix: convert it again from the source "
            "data, or leave it out with .bidsignore"
        )
    correlation = neighbour_correlation(data)
    if correlation < MIN_NEIGHBOUR_CORRELATION:
        return (
            f"has no anatomical structure (neighbouring voxels correlate {correlation:.2f}, a head's "
            f"{MIN_NEIGHBOUR_CORRELATION:g} or more): it looks like noise. Fix: check that this file is the "
            "anatomical image (convert it again from the source data), or leave it out with .bidsignore"
        )
    return None


def neighbour_correlation(data: np.ndarray) -> float:
    """The smallest, over the three axes, correlation between each voxel and its next
    neighbour (on a copy subsampled to at most ~4 million voxels)."""
    volume = np.asarray(data, np.float32)
    while volume.size > 4_000_000:
        volume = volume[::2, ::2, ::2]
    correlations = []
    for axis in range(3):
        moved = np.moveaxis(volume, axis, 0)
        first, second = moved[:-1].ravel(), moved[1:].ravel()
        spread = float(first.std()) * float(second.std())
        covariance = float(np.mean((first - first.mean()) * (second - second.mean())))
        correlations.append(covariance / spread if spread > 0 else 0.0)
    return min(correlations)


def screen_images(images: list[ImageRecord], workers: int = 1) -> Screened:
    """Split ``images`` into usable ones and rejections (logged as warnings)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # zlib and numpy release the GIL
        problems = list(pool.map(lambda image: image_problem(image.path), images))
    usable, rejected = [], []
    for image, problem in zip(images, problems):
        if problem is None:
            usable.append(image)
        else:
            rejected.append(f"{image.relpath} {problem}")
            LOGGER.warning("left out %s %s", image.relpath, problem)
    return Screened(usable, rejected)
