"""2.5D slice geometry shared by training and inference.

Volumes are handled as tensors shaped (slices, height, width) with the axial axis first. A 2.5D
sample for slice k stacks slices k-r .. k+r as channels (r = in_channels // 2); indices outside
the volume are clamped, i.e. the first and last slices are replicated. Training and inference use
the same clamping and the same centre pad/crop, so the model sees the same kind of input in both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Intensities are scaled to [-1, 1] with the background at -1 (see docs/model.md).
BACKGROUND = -1.0
# A voxel counts as foreground when it is above the background by 2.5 % of the [-1, 1] range.
FOREGROUND_MARGIN = 0.05
# Slices with a smaller fraction of foreground voxels are skipped (training, reference styles).
MIN_FOREGROUND = 0.05


def model_image_size(brain_mask: np.ndarray, margin_voxels: int = 4, multiple: int = 16) -> int:
    """The smallest square (a multiple of 16, as the encoders downsample) centred on the grid
    that holds every axial slice of the brain plus a margin. Cropping the template's air
    around the head makes CPU training ~2x cheaper than padding to the next power of two."""
    extents = []
    for axis in (0, 1):
        index = np.nonzero(brain_mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        centre = (brain_mask.shape[axis] - 1) / 2
        extents.append(2 * max(centre - index.min(), index.max() - centre) + 1 + 2 * margin_voxels)
    return int(np.ceil(max(extents) / multiple) * multiple)


def neighbour_indices(centres: Tensor, in_channels: int, num_slices: int) -> Tensor:
    """(B,) centre slice indices -> (B, in_channels) indices of the stacked slices, clamped."""
    radius = in_channels // 2
    offsets = torch.arange(-radius, radius + 1, device=centres.device)
    return (centres[:, None] + offsets).clamp_(0, num_slices - 1)


def gather_stacks(volumes: Tensor, volume_index: Tensor, centres: Tensor, in_channels: int) -> Tensor:
    """Gather 2.5D stacks from volumes (V, D, H, W) with one indexing op -> (B, in_channels, H, W)."""
    slice_index = neighbour_indices(centres, in_channels, volumes.shape[1])
    return volumes[volume_index[:, None], slice_index]


def fit_in_plane(images: Tensor, size: int, fill: float = BACKGROUND) -> Tensor:
    """Centre-pad (with `fill`) or centre-crop the last two axes to size x size."""
    height, width = images.shape[-2:]
    pads = [*_centre_pads(width, size), *_centre_pads(height, size)]
    # F.pad crops where a pad is negative.
    return F.pad(images, pads, value=fill)


def restore_in_plane(images: Tensor, height: int, width: int, original: Tensor) -> Tensor:
    """Undo `fit_in_plane`: put the size x size model output back on the height x width grid.

    Where `fit_in_plane` cropped, the model saw nothing; those pixels keep their `original`
    values (usually background) so the output has exactly the input's grid.
    """
    size = images.shape[-1]
    restored = original.clone()
    rows_out, rows_in = _overlap(height, size)
    cols_out, cols_in = _overlap(width, size)
    restored[..., rows_out, cols_out] = images[..., rows_in, cols_in].to(restored.dtype)
    return restored


def _overlap(length: int, size: int) -> tuple[slice, slice]:
    """Where the original axis and the fitted axis overlap: (slice in original, slice in fitted)."""
    before = _centre_pads(length, size)[0]
    count = min(length, size)
    return slice(max(-before, 0), max(-before, 0) + count), slice(max(before, 0), max(before, 0) + count)


def _centre_pads(length: int, size: int) -> tuple[int, int]:
    """(before, after) padding that centres `length` in `size`; negative values crop."""
    before = (size - length) // 2
    return before, size - length - before


def foreground_fraction(slices: Tensor) -> Tensor:
    """Fraction of foreground voxels in each slice of a (D, H, W) volume -> (D,)."""
    return (slices > BACKGROUND + FOREGROUND_MARGIN).float().mean(dim=(-2, -1))
