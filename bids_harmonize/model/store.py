"""Training volumes on disk: an append-only store that training reads 2.5D stacks from.

Group training at consortium scale (thousands of sessions) cannot hold every template-grid
volume in RAM. The group level writes each volume once, in the model range [-1, 1] as float16,
into a store in the work dir; the sampler then reads only the slices a batch needs, with one
`pread` per sample, so resident memory does not grow with the number of sessions (the kernel's
page cache keeps recently read slices and gives them back under memory pressure).

A store is a folder:
  store.json    the grid (slices first) every volume shares, and the format version
  volumes.f16   raw float16 volumes, one after another, C order; written once, never rewritten
  index.jsonl   one line per volume: its key (e.g. the source file), a stamp of the source
                (size and mtime), the SHA-256 training fingerprint, per-slice foreground
                fractions, and free-form `extra` data (the group level keeps intensity scales
                and brain histograms there); a later line with the same row gives it a new stamp

Adding sessions appends rows. A volume's bytes are written and synced before its index line,
so a crash leaves at most unindexed bytes at the end of volumes.f16, which the next open cuts
off. A source file whose values changed gets a new row; its old row stays, unused (remove the
folder to reclaim the space). One rewritten with the same values only takes a new stamp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bids_harmonize.model.data import check_intensity_range, volume_digest
from bids_harmonize.model.slices import foreground_fraction, neighbour_indices
from bids_harmonize.utils import atomic_write_json, atomic_write_text

LOGGER = logging.getLogger("bids_harmonize")
FORMAT = 1
HEADER_NAME, DATA_NAME, INDEX_NAME = "store.json", "volumes.f16", "index.jsonl"
DTYPE = np.dtype("<f2")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


@dataclass(frozen=True)
class StoreEntry:
    """One stored volume."""

    row: int
    key: str
    stamp: str
    sha256: str
    foreground: np.ndarray  # (slices,) float32 fraction of foreground voxels per slice
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        record = {
            "row": self.row,
            "key": self.key,
            "stamp": self.stamp,
            "sha256": self.sha256,
            "foreground": [float(value) for value in self.foreground],
            "extra": self.extra,
        }
        return json.dumps(record)

    @classmethod
    def from_json(cls, line: str) -> StoreEntry:
        record = json.loads(line)
        record["foreground"] = np.asarray(record["foreground"], np.float32)
        return cls(**record)


class VolumeStore:
    """An append-only on-disk set of volumes that share one grid (slices, height, width)."""

    def __init__(self, folder: Path, shape: tuple[int, int, int], entries: list[StoreEntry]) -> None:
        self.folder, self.shape, self.entries = folder, shape, entries
        self.volume_bytes = int(np.prod(shape)) * DTYPE.itemsize
        self._rows_by_source: dict[tuple[str, str], int] = {}
        self._rows_by_content: dict[tuple[str, str], int] = {}
        for entry in entries:
            self._remember(entry)
        self._file: Any = None

    @classmethod
    def open(cls, folder: str | os.PathLike, shape: Sequence[int]) -> VolumeStore:
        """Open the store in `folder` for volumes of `shape` (slices first), creating it if needed.

        A store for another grid (e.g. another template resolution) is replaced, with a warning:
        none of its volumes could be used."""
        folder, shape = Path(folder), tuple(int(n) for n in shape)
        header = {"format": FORMAT, "shape": list(shape), "dtype": DTYPE.str}
        if (folder / HEADER_NAME).is_file():
            found = json.loads((folder / HEADER_NAME).read_text())
            if found == header:
                return cls(folder, shape, _read_index(folder, shape, repair=True))
            LOGGER.warning(
                "%s holds volumes of another grid or format (%s); starting a new store for %s", folder, found, header
            )
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DATA_NAME).touch()
        (folder / INDEX_NAME).touch()
        atomic_write_json(folder / HEADER_NAME, header)
        return cls(folder, shape, [])

    @classmethod
    def open_existing(cls, folder: Path) -> VolumeStore:
        """Open a store another process wrote, to read only (e.g. in each torchrun worker)."""
        if not (folder / HEADER_NAME).is_file():
            raise FileNotFoundError(f"{folder} holds no volume store ({HEADER_NAME} is missing)")
        shape = tuple(json.loads((folder / HEADER_NAME).read_text())["shape"])
        return cls(folder, shape, _read_index(folder, shape, repair=False))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def nbytes(self) -> int:
        return len(self.entries) * self.volume_bytes

    def find(self, key: str, stamp: str) -> int | None:
        """The row holding `key` as it was at `stamp`, if stored."""
        return self._rows_by_source.get((key, stamp))

    def add(self, key: str, stamp: str, volume: np.ndarray, extra: dict[str, Any] | None = None) -> int:
        """Store a volume (slices first, in [-1, 1]) and return its row. A volume already stored
        under `key` with the same values keeps its row and takes the new stamp (a rewritten but
        unchanged file, e.g. after the participant level ran again, is not stored twice)."""
        volume = np.asarray(volume)
        if volume.shape != self.shape:
            raise ValueError(
                f"{key}: shape {volume.shape} (slices first) differs from the store's {self.shape} "
                f"({self.folder}); training volumes must share one template grid"
            )
        check_intensity_range(volume, key)
        values = np.clip(volume, -1.0, 1.0).astype(DTYPE)
        digest = volume_digest(values)
        row = self._rows_by_content.get((key, digest))
        if row is not None:
            self._record(dataclasses.replace(self.entries[row], stamp=stamp))
            return row
        row = len(self.entries)
        with open(self.folder / DATA_NAME, "r+b") as handle:
            handle.seek(row * self.volume_bytes)
            handle.write(values.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        fractions = foreground_fraction(torch.from_numpy(values).float()).numpy()
        self._record(StoreEntry(row, key, stamp, digest, fractions, extra or {}))
        _return_freed_memory()
        return row

    def _record(self, entry: StoreEntry) -> None:
        """Append the entry's index line: a new row, or a new stamp of an existing one."""
        with open(self.folder / INDEX_NAME, "a") as handle:
            handle.write(entry.to_json() + "\n")
        if entry.row == len(self.entries):
            self.entries.append(entry)
        else:
            self.entries[entry.row] = entry
        self._remember(entry)

    def _remember(self, entry: StoreEntry) -> None:
        self._rows_by_source[(entry.key, entry.stamp)] = entry.row
        self._rows_by_content[(entry.key, entry.sha256)] = entry.row

    def read_slices(self, row: int, first: int, count: int) -> np.ndarray:
        """Slices first .. first + count - 1 of one volume, (count, height, width) float16."""
        if self._file is None:
            self._file = open(self.folder / DATA_NAME, "rb", buffering=0)  # noqa: SIM115 (kept open)
        plane = self.shape[1] * self.shape[2]
        offset = row * self.volume_bytes + first * plane * DTYPE.itemsize
        data = os.pread(self._file.fileno(), count * plane * DTYPE.itemsize, offset)
        return np.frombuffer(data, DTYPE).reshape(count, *self.shape[1:])

    def read_volume(self, row: int) -> np.ndarray:
        return self.read_slices(row, 0, self.shape[0])


def _return_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Once glibc's adaptive mmap threshold has risen, volume-sized numpy temporaries come from the
    heap, and freeing them does not shrink it: without this, a process storing 2 mm volumes grew
    by ~1.5-4 MB per volume (measured; see benchmarks/results/group_scale.md)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _read_index(folder: Path, shape: tuple[int, ...], repair: bool) -> list[StoreEntry]:
    """The complete index lines; with `repair`, volumes.f16 is cut back to the rows they
    describe and a line cut short by a crash is dropped from index.jsonl."""
    entries, cut_short = [], False
    with open(folder / INDEX_NAME) as handle:
        for line in handle:
            if not line.endswith("\n"):
                cut_short = True  # by a crash: its volume is written again by the next append
                break
            entry = StoreEntry.from_json(line)
            if entry.row == len(entries):
                entries.append(entry)
            elif entry.row < len(entries):
                entries[entry.row] = entry  # a later stamp of a stored volume
            else:
                raise ValueError(
                    f"{folder / INDEX_NAME}: row {entry.row} follows row {len(entries) - 1}; "
                    f"remove {folder} to rebuild the store"
                )
    data_size = len(entries) * int(np.prod(shape)) * DTYPE.itemsize
    if (folder / DATA_NAME).stat().st_size < data_size:
        raise ValueError(f"{folder / DATA_NAME} is shorter than its index says; remove {folder} to rebuild it")
    if not repair:
        return entries
    os.truncate(folder / DATA_NAME, data_size)
    if cut_short:
        atomic_write_text(folder / INDEX_NAME, "".join(entry.to_json() + "\n" for entry in entries))
    return entries


class StoredVolumes:
    """Some rows of a store, as the training sampler sees them (see data.VolumeSet)."""

    def __init__(self, store: VolumeStore, rows: Sequence[int]) -> None:
        if not rows:
            raise ValueError("no training volumes were given")
        self.store, self.rows = store, list(rows)
        self.shape = (len(self.rows), *store.shape)

    @property
    def hashes(self) -> list[str]:
        return [self.store.entries[row].sha256 for row in self.rows]

    def foreground(self) -> Tensor:
        return torch.from_numpy(np.stack([self.store.entries[row].foreground for row in self.rows]))

    def gather(self, volume_index: Tensor, centres: Tensor, in_channels: int) -> Tensor:
        """2.5D stacks (B, in_channels, H, W) float16: one read of neighbouring slices per sample."""
        slices = neighbour_indices(centres.cpu(), in_channels, self.store.shape[0])
        stacks = np.empty((len(centres), in_channels, *self.store.shape[1:]), DTYPE)
        for sample, (volume, wanted) in enumerate(zip(volume_index.tolist(), slices.numpy())):
            first = int(wanted.min())
            block = self.store.read_slices(self.rows[volume], first, int(wanted.max()) - first + 1)
            stacks[sample] = block[wanted - first]
        return torch.from_numpy(stacks)

    def to(self, device: torch.device) -> Tensor:
        """All rows in one tensor on `device`, read volume by volume (no second copy in RAM)."""
        volumes = torch.empty(self.shape, dtype=torch.float16, device=device)
        for index, row in enumerate(self.rows):
            volumes[index] = torch.from_numpy(self.store.read_volume(row).copy()).to(device)
        return volumes
