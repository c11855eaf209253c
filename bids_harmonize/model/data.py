"""Training data: a set of volumes, and a sampler that draws site-balanced 2.5D batches from it.

A volume set is either every volume in one tensor (`TensorVolumes`: small studies, tests, and
on a GPU whenever the volumes fit there; a batch is then one gather) or some rows of an on-disk
store (store.StoredVolumes: consortium-scale group training, one read per sample). The sampler
draws the same indices from either, so both give the same batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

import nibabel as nib
import numpy as np
import torch
from torch import Tensor

from bids_harmonize.model.losses import TrainingBatch
from bids_harmonize.model.networks import MURDConfig
from bids_harmonize.model.slices import BACKGROUND, fit_in_plane, foreground_fraction, gather_stacks

VolumeSource = np.ndarray | str | os.PathLike
# Values this far outside [-1, 1] are rounding; anything further is a scaling mistake.
RANGE_TOLERANCE = 1e-3
# Keep the stacked volumes on the GPU when they take at most this share of its free memory.
DEVICE_MEMORY_SHARE = 0.4


def read_volume(source: VolumeSource, slice_axis: int = 2) -> np.ndarray:
    """A volume as float32 (slices, height, width): from an array, or a NIfTI path via nibabel."""
    if isinstance(source, np.ndarray):
        array = source.astype(np.float32, copy=False)
    else:
        array = np.asarray(nib.load(os.fspath(source)).get_fdata(dtype=np.float32))
    if array.ndim != 3:
        raise ValueError(f"{_describe(source)}: expected a 3-D volume, got shape {array.shape}")
    return np.moveaxis(array, slice_axis, 0)


def check_intensity_range(volume: np.ndarray, source: VolumeSource) -> None:
    low, high = float(volume.min()), float(volume.max())
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"{_describe(source)}: intensities span [{low:.3g}, {high:.3g}] but MURD expects [-1, 1] "
            "with the background at -1; scale each volume first (robust min/max scaling, as the "
            "preprocessing step does)"
        )


def stack_volumes(sources: Sequence[VolumeSource], slice_axis: int = 2) -> tuple[Tensor, list[str]]:
    """Load all volumes into one float16 tensor (V, D, H, W), plus the SHA-256 of each.

    float16 halves host/GPU memory against float32 and keeps ~3 decimal digits in [-1, 1], far
    finer than the 8-bit images the reference trained on. Volumes must share one grid
    (template space). Each hash covers the shape and the float16 values the model trains on.
    """
    if not sources:
        raise ValueError("no training volumes were given")
    stacked: Tensor | None = None
    hashes = []
    for index, source in enumerate(sources):
        volume = read_volume(source, slice_axis)
        check_intensity_range(volume, source)
        if stacked is None:
            stacked = torch.empty((len(sources), *volume.shape), dtype=torch.float16)
        elif volume.shape != tuple(stacked.shape[1:]):
            raise ValueError(
                f"{_describe(source)}: shape {volume.shape} (slices first) differs from the first "
                f"volume's {tuple(stacked.shape[1:])}; training volumes must share one template grid"
            )
        stacked[index] = torch.from_numpy(np.clip(volume, -1.0, 1.0))
        hashes.append(volume_digest(stacked[index].numpy()))
    return stacked, hashes


def volume_digest(values: np.ndarray) -> str:
    """SHA-256 of a float16 volume's shape and values: what the model trains on."""
    digest = hashlib.sha256(str(tuple(values.shape)).encode())
    digest.update(np.ascontiguousarray(values, "<f2").tobytes())
    return digest.hexdigest()


def data_fingerprint(volume_hashes: Sequence[str], site_labels: Sequence[int], site_names: Sequence[str]) -> str:
    """One SHA-256 over the ordered list of (volume hash, site name): what a model was trained on."""
    entries = [[digest, site_names[label]] for digest, label in zip(volume_hashes, site_labels)]
    return "sha256:" + hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _describe(source: VolumeSource) -> str:
    return "array volume" if isinstance(source, np.ndarray) else str(source)


def seeded_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """An independent random stream per (seed, process rank)."""
    state = np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


class VolumeSet(Protocol):
    """What the sampler reads: V volumes of one grid, slices first."""

    shape: tuple[int, ...]  # (V, D, H, W)

    def foreground(self) -> Tensor:
        """(V, D) fraction of foreground voxels of every slice."""

    def gather(self, volume_index: Tensor, centres: Tensor, in_channels: int) -> Tensor:
        """(B, in_channels, H, W) float16 2.5D stacks around the given centre slices."""


class TensorVolumes:
    """Volumes stacked in one float16 tensor (V, D, H, W), in RAM or on the training device."""

    def __init__(self, volumes: Tensor) -> None:
        self.volumes, self.shape = volumes, tuple(volumes.shape)

    def foreground(self) -> Tensor:
        return torch.stack([foreground_fraction(volume.float()) for volume in self.volumes]).cpu()

    def gather(self, volume_index: Tensor, centres: Tensor, in_channels: int) -> Tensor:
        where = self.volumes.device
        return gather_stacks(self.volumes, volume_index.to(where), centres.to(where), in_channels)


class SliceSampler:
    """Random 2.5D training batches from stacked volumes.

    A sample is a (volume, centre slice) pair whose centre slice has at least `min_foreground`
    foreground voxels. With `site_balanced`, the source site is drawn uniformly first and a
    slice of that site second, so small sites are seen as often as large ones. Target sites are
    uniform over all sites. Every random draw comes from one generator on the training device,
    and the index tables live there too, so drawing a batch needs no host round trip (on a GPU,
    the CPU can queue the next kernels while the current ones run). Its state goes into
    checkpoints.
    """

    def __init__(
        self,
        volumes: Tensor | VolumeSet,
        site_labels: Sequence[int],
        config: MURDConfig,
        *,
        batch_size: int,
        site_balanced: bool,
        min_foreground: float,
        content_noise_std: float,
        seed: int,
        device: torch.device,
        rank: int = 0,
        crop_size: int | None = None,
    ) -> None:
        if crop_size is not None and not 0 < crop_size <= config.image_size:
            raise ValueError(f"crop_size must lie in 1..image_size ({config.image_size}), got {crop_size}")
        self.config = config
        self.crop_size = crop_size or config.image_size
        self.batch_size = batch_size
        self.site_balanced = site_balanced
        self.content_noise_std = content_noise_std
        self.device = device
        self.volumes = _place_volumes(volumes, device)
        self.site_labels = torch.as_tensor(site_labels, dtype=torch.long, device=device)
        self._index_slices(min_foreground)
        self._index_volumes()
        self.hold_out(())
        self.generator = seeded_generator(seed, rank, device)

    def _index_slices(self, min_foreground: float) -> None:
        """List the usable (volume, centre) pairs grouped by site, and where each site starts."""
        usable = self.volumes.foreground() >= min_foreground
        volume_index, centre = (index.to(self.device) for index in usable.nonzero(as_tuple=True))
        order = torch.argsort(self.site_labels[volume_index], stable=True)
        self.slice_volume, self.slice_centre = volume_index[order], centre[order]
        self.site_counts = torch.bincount(self.site_labels[self.slice_volume], minlength=self.config.num_sites)
        self.site_offsets = _starts(self.site_counts)
        empty = (self.site_counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"site indices {empty} have no slice with >= {min_foreground:.0%} foreground; every site "
                "needs training volumes scaled to [-1, 1] with background at -1"
            )

    def _index_volumes(self) -> None:
        """Volume indices grouped by site, for drawing same-height reference slices of a site."""
        self.volumes_by_site = torch.argsort(self.site_labels, stable=True)

    def hold_out(self, volume_indices: Sequence[int]) -> None:
        """Leave these volumes out of `sample()`, as sources and as references (validation.py
        scores them); `site_positions` and `slice_volume` still list every volume, so the site
        anchors and site styles read the whole study."""
        held = torch.zeros(len(self.site_labels), dtype=torch.bool, device=self.device)
        held[torch.as_tensor(list(volume_indices), dtype=torch.long, device=self.device)] = True
        keep = ~held[self.slice_volume]  # both orderings are by site, and filtering keeps them so
        self.draw_volume, self.draw_centre = self.slice_volume[keep], self.slice_centre[keep]
        self.draw_counts = torch.bincount(self.site_labels[self.draw_volume], minlength=self.config.num_sites)
        self.draw_offsets = _starts(self.draw_counts)
        self.reference_volumes = self.volumes_by_site[~held[self.volumes_by_site]]
        sites = self.config.num_sites
        self.reference_counts = torch.bincount(self.site_labels[self.reference_volumes], minlength=sites)
        self.reference_offsets = _starts(self.reference_counts)
        short = ((self.draw_counts == 0) | (self.reference_counts == 0)).nonzero().flatten().tolist()
        if short:
            held_list = sorted(volume_indices)
            raise ValueError(f"holding out volumes {held_list} leaves site indices {short} nothing to train on")

    def stacks(self, volume_index: Tensor, centre: Tensor) -> Tensor:
        """The model inputs (B, C, S, S) float32 on the training device for the given pairs."""
        stacks = self.volumes.gather(volume_index, centre, self.config.in_channels)
        return fit_in_plane(stacks.to(self.device, torch.float32), self.config.image_size, fill=BACKGROUND)

    def site_positions(self, site: int) -> tuple[Tensor, Tensor]:
        """All usable (volume, centre) pairs of one site."""
        start, count = int(self.site_offsets[site]), int(self.site_counts[site])
        return self.slice_volume[start : start + count], self.slice_centre[start : start + count]

    def sample(self) -> TrainingBatch:
        batch, config = self.batch_size, self.config
        options = {"generator": self.generator, "device": self.device}
        if self.site_balanced:
            sites = torch.randint(config.num_sites, (batch,), **options)
            within = torch.rand(batch, dtype=torch.float64, **options) * self.draw_counts[sites]
            pick = self.draw_offsets[sites] + within.long()
        else:
            pick = torch.randint(len(self.draw_volume), (batch,), **options)
        targets = torch.randint(config.num_sites, (batch,), **options)
        volume_index, centre = self.draw_volume[pick], self.draw_centre[pick]
        # A random volume of each target site, at the same height (volumes share one grid).
        within = torch.rand(batch, dtype=torch.float64, **options) * self.reference_counts[targets]
        reference_volume = self.reference_volumes[self.reference_offsets[targets] + within.long()]
        top, left = self._crop_offset()
        content_size = self.crop_size // 2**config.encoder_downsamplings
        return TrainingBatch(
            images=self._crop(self.stacks(volume_index, centre), top, left),
            references=self._crop(self.stacks(reference_volume, centre), top, left),
            source_sites=self.site_labels[volume_index],
            target_sites=targets,
            latents=self._normal(batch, config.latent_dim),
            diversity_latents=self._normal(batch, config.latent_dim),
            content_noise=self._normal(batch, config.content_channels, content_size, content_size)
            * self.content_noise_std,
        )

    def _crop_offset(self) -> tuple[int, int]:
        """One random crop position per batch (all samples share it: one slicing op)."""
        room = self.config.image_size - self.crop_size
        if room == 0:
            return 0, 0
        top, left = torch.randint(room + 1, (2,), generator=self.generator, device=self.device).tolist()
        return top, left

    def _crop(self, images: Tensor, top: int, left: int) -> Tensor:
        return images[..., top : top + self.crop_size, left : left + self.crop_size]

    def _normal(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


def _starts(counts: Tensor) -> Tensor:
    """Where each group starts in a list ordered by group, from the groups' sizes."""
    return torch.cumsum(counts, 0) - counts


def _place_volumes(volumes: Tensor | VolumeSet, device: torch.device) -> VolumeSet:
    """On the GPU when they fit comfortably (gathers then never leave the device), else where
    they are (RAM, or the on-disk store)."""
    if device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
        if np.prod(volumes.shape) * 2 <= DEVICE_MEMORY_SHARE * free_bytes:
            return TensorVolumes(volumes.to(device))
    return TensorVolumes(volumes) if isinstance(volumes, Tensor) else volumes


def training_volume_set(volumes: Sequence[VolumeSource] | VolumeSet, slice_axis: int) -> tuple[Any, list[str]]:
    """The sampler's volumes and the SHA-256 of each: a store's rows as they are, arrays or
    NIfTI paths stacked in RAM."""
    if hasattr(volumes, "gather"):
        return volumes, list(volumes.hashes)
    return stack_volumes(volumes, slice_axis)


def mask_slices_first(brain_mask: np.ndarray, slice_axis: int, grid: tuple[int, ...]) -> Tensor:
    """The brain mask as a bool tensor (slices, height, width), checked against the volumes' grid."""
    mask = np.moveaxis(np.asarray(brain_mask, bool), slice_axis, 0)
    if mask.shape != grid:
        raise ValueError(
            f"the brain mask has shape {mask.shape} (slices first) but the training volumes {grid}: "
            "pass the mask of the template grid the volumes are on"
        )
    return torch.from_numpy(mask.copy())


def check_site_labels(site_labels: Sequence[int], site_names: Sequence[str], config: MURDConfig) -> None:
    if len(site_names) != config.num_sites or len(set(site_names)) != len(site_names):
        raise ValueError(
            f"config.num_sites is {config.num_sites} but {len(site_names)} site names were given (must be unique)"
        )
    if config.num_sites < 2:
        raise ValueError("MURD translates between sites: training needs volumes from at least 2 sites")
    bad = sorted({label for label in site_labels if not 0 <= label < config.num_sites})
    if bad:
        raise ValueError(f"site labels {bad} are outside 0..{config.num_sites - 1} (indices into site_names)")
