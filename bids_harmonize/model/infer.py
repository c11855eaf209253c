"""Inference engine: harmonise a whole volume to one target style, slice stack by slice stack.

Every axial slice k is predicted as part of the stacks centred on k-1, k and k+1 (for 3 input
channels); the volume is the per-slice average of those predictions. One style code serves the
whole volume so neighbouring slices are rendered alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from bids_harmonize.model.common import autocast_for
from bids_harmonize.model.networks import CONV_MEMORY_FORMAT, MURDConfig, Translator
from bids_harmonize.model.slices import (
    BACKGROUND,
    MIN_FOREGROUND,
    fit_in_plane,
    foreground_fraction,
    gather_stacks,
    neighbour_indices,
    restore_in_plane,
)

# Slices per batch are capped: a whole 256-slice volume fits one GPU batch, and a CPU gains
# nothing from batches larger than a few slices while its RAM is shared with other jobs.
MAX_BATCH = {"cuda": 256, "cpu": 16}
# Use at most this share of the free memory for activations.
MEMORY_SHARE = 0.5
# Live activation tensors per layer at the widest stage, times a margin for conv workspaces.
ACTIVATION_FACTOR = 6


def model_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def bytes_per_slice(config: MURDConfig, device: torch.device) -> int:
    """Rough peak activation memory of translating one slice, for choosing a batch size."""
    element = 2 if device.type == "cuda" else 4  # bf16 autocast on CUDA, fp32 elsewhere
    full = config.image_size**2
    widest = max(
        config.encoder_channels * full,  # first encoder stage at full resolution
        (config.content_channels + config.style_dim) * config.content_size**2,  # generator body
        (config.content_channels + config.style_dim) // 2**config.encoder_downsamplings * full,  # last up-sampling
    )
    return ACTIVATION_FACTOR * element * widest


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_batch_size(config: MURDConfig, device: torch.device) -> int:
    """Largest slice batch whose estimated activations fit in half the free memory, capped."""
    fitting = int(MEMORY_SHARE * free_memory_bytes(device)) // bytes_per_slice(config, device)
    return max(1, min(fitting, MAX_BATCH.get(device.type, MAX_BATCH["cpu"])))


def as_slices(volume: np.ndarray | Tensor, slice_axis: int, device: torch.device) -> Tensor:
    """A 3-D volume as float32 (slices, height, width) on `device`."""
    tensor = torch.as_tensor(volume)
    if tensor.ndim != 3 or 0 in tensor.shape:
        raise ValueError(f"expected a non-empty 3-D volume, got shape {tuple(tensor.shape)}")
    return tensor.movedim(slice_axis, 0).to(device, torch.float32)


def harmonize_volume(
    translator: Translator,
    volume: np.ndarray | Tensor,
    style: Tensor,
    *,
    source_style: Tensor | None = None,
    batch_size: int | None = None,
    slice_axis: int = 2,
) -> np.ndarray:
    """Translate a [-1, 1]-scaled volume to `style`; returns float32 of exactly the input shape.

    `source_style` is the volume's own style, which the style-aware generator renders relative
    to (see `reference_style`). Slices whose in-plane size differs from the model's are centre
    padded/cropped on the way in and put back on their own grid on the way out (cropped-away
    pixels keep their input values).

    Repeatable bit for bit with the same batch size, thread count and machine. Another batch
    size (or CPU, or device) gives the same result up to float32 rounding only: the kernels sum
    in another order for another batch shape, so bits may differ (tests/model/rounding.py
    bounds by how much).
    """
    config, device = translator.config, model_device(translator)
    slices = as_slices(volume, slice_axis, device)
    num_slices, height, width = slices.shape
    batch_size = batch_size or auto_batch_size(config, device)
    style = style.to(device, torch.float32).reshape(1, -1)
    if source_style is not None:
        source_style = source_style.to(device, torch.float32).reshape(1, -1)
    total = torch.zeros_like(slices)
    with torch.inference_mode(), autocast_for(device):
        for centres in torch.arange(num_slices, device=device).split(batch_size):
            stacks = gather_stacks(slices[None], torch.zeros_like(centres), centres, config.in_channels)
            sources = None if source_style is None else source_style.expand(len(centres), -1)
            outputs = translator.translate(_model_input(stacks, config), style.expand(len(centres), -1), sources)
            neighbours = neighbour_indices(centres, config.in_channels, num_slices)
            restored = restore_in_plane(outputs.float(), height, width, original=stacks)
            # Accumulating index_put_ is deterministic (sort-based on CUDA, unlike index_add_).
            total.index_put_((neighbours.flatten(),), restored.flatten(0, 1), accumulate=True)
    counts = prediction_counts(num_slices, config.in_channels, device)
    return (total / counts[:, None, None]).movedim(0, slice_axis).cpu().numpy()


def prediction_counts(num_slices: int, in_channels: int, device: torch.device) -> Tensor:
    """How many stack outputs land on each slice (3 everywhere for 3 channels; the replicated
    edge copies count for the edge slice they copy)."""
    every = neighbour_indices(torch.arange(num_slices, device=device), in_channels, num_slices)
    return torch.bincount(every.flatten(), minlength=num_slices).float()


def _model_input(stacks: Tensor, config: MURDConfig) -> Tensor:
    return fit_in_plane(stacks, config.image_size, fill=BACKGROUND).contiguous(memory_format=CONV_MEMORY_FORMAT)


def mean_style(translator: Translator, batches: Iterable[Tensor], site_index: int) -> Tensor:
    """Average style code (style_dim,) of image batches, all read through one site's head."""
    device = model_device(translator)
    total, count = torch.zeros(translator.config.style_dim, device=device), 0
    with torch.inference_mode(), autocast_for(device):
        for images in batches:
            sites = torch.full((images.shape[0],), site_index, device=device)
            total += translator.style_encoder(images, sites).float().sum(0)
            count += images.shape[0]
    return total / count


def reference_style(
    translator: Translator,
    volume: np.ndarray | Tensor,
    site_index: int,
    *,
    batch_size: int | None = None,
    slice_axis: int = 2,
) -> Tensor:
    """Style of a reference volume of a known site: mean style code over its foreground stacks."""
    config, device = translator.config, model_device(translator)
    slices = as_slices(volume, slice_axis, device)
    centres = (foreground_fraction(slices) >= MIN_FOREGROUND).nonzero().flatten()
    if len(centres) == 0:
        raise ValueError(
            f"the reference volume has no slice with >= {MIN_FOREGROUND:.0%} foreground; "
            "pass a brain image scaled to [-1, 1] with background at -1"
        )
    batch_size = batch_size or auto_batch_size(config, device)
    batches = (
        _model_input(gather_stacks(slices[None], torch.zeros_like(chunk), chunk, config.in_channels), config)
        for chunk in centres.split(batch_size)
    )
    return mean_style(translator, batches, site_index)


def random_style(translator: Translator, site_index: int, seed: int) -> Tensor:
    """A seeded draw from a site's style distribution: F_site(z), z ~ N(0, I) truncated at +-2."""
    device = model_device(translator)
    latent = torch.empty(1, translator.config.latent_dim)
    nn.init.trunc_normal_(latent, a=-2.0, b=2.0, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return translator.mapping(latent.to(device), torch.tensor([site_index], device=device)).float()[0]
