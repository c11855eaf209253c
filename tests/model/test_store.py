"""The on-disk volume store: what goes in comes out, appends survive reopening and crashes, and
training from it equals training from the same volumes in RAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_harmonize.model import train
from bids_harmonize.model.bundle import WEIGHTS_NAME
from bids_harmonize.model.data import SliceSampler, stack_volumes
from bids_harmonize.model.store import DATA_NAME, INDEX_NAME, StoredVolumes, VolumeStore

SITES = ["siteA", "siteB"]


def slices_first(volume: np.ndarray) -> np.ndarray:
    return np.moveaxis(volume, 2, 0)


def filled_store(folder, volumes) -> VolumeStore:
    store = VolumeStore.open(folder, slices_first(volumes[0]).shape)
    for index, volume in enumerate(volumes):
        store.add(f"vol{index}", "stamp", slices_first(volume), extra={"index": index})
    return store


def test_volumes_read_back_as_the_float16_values_and_hashes_training_uses(tmp_path, toy_data):
    volumes, _ = toy_data
    store = filled_store(tmp_path / "store", volumes)
    stacked, hashes = stack_volumes(volumes)
    for row in range(len(volumes)):
        assert np.array_equal(store.read_volume(row), stacked[row].numpy())
    assert StoredVolumes(store, range(len(volumes))).hashes == hashes
    assert store.nbytes == stacked.numel() * 2 == (tmp_path / "store" / DATA_NAME).stat().st_size


def test_reopening_keeps_the_rows_and_appends_after_them(tmp_path, toy_data):
    volumes, _ = toy_data
    filled_store(tmp_path / "store", volumes[:2])
    store = VolumeStore.open(tmp_path / "store", slices_first(volumes[0]).shape)
    assert len(store) == 2 and store.find("vol1", "stamp") == 1 and store.find("vol1", "changed") is None
    assert store.entries[1].extra == {"index": 1}
    assert store.add("vol2", "stamp", slices_first(volumes[2])) == 2
    assert np.array_equal(store.read_volume(2), stack_volumes(volumes[2:3])[0][0].numpy())


def test_a_rewritten_file_with_the_same_values_keeps_its_row(tmp_path, toy_data):
    volumes, _ = toy_data
    store = filled_store(tmp_path / "store", volumes[:2])
    assert store.add("vol1", "rewritten", slices_first(volumes[1])) == 1
    assert store.add("vol1", "changed", slices_first(volumes[2])) == 2  # new values: a new row
    reopened = VolumeStore.open(tmp_path / "store", slices_first(volumes[0]).shape)
    assert len(reopened) == 3 and reopened.find("vol1", "rewritten") == 1
    assert reopened.entries[1].stamp == "rewritten" and reopened.entries[1].extra == {"index": 1}
    assert (tmp_path / "store" / DATA_NAME).stat().st_size == 3 * store.volume_bytes


def test_a_crash_mid_append_loses_only_the_unfinished_volume(tmp_path, toy_data):
    volumes, _ = toy_data
    filled_store(tmp_path / "store", volumes[:2])
    with open(tmp_path / "store" / DATA_NAME, "ab") as handle:
        handle.write(b"\0" * 1000)  # the bytes of a volume whose index line was never completed
    with open(tmp_path / "store" / INDEX_NAME, "a") as handle:
        handle.write('{"row": 2, "key": "vol2"')
    store = VolumeStore.open(tmp_path / "store", slices_first(volumes[0]).shape)
    assert len(store) == 2
    assert (tmp_path / "store" / DATA_NAME).stat().st_size == 2 * store.volume_bytes
    assert store.add("vol2", "stamp", slices_first(volumes[2])) == 2


def test_a_store_of_another_grid_is_replaced_with_a_warning(tmp_path, toy_data, caplog):
    volumes, _ = toy_data
    filled_store(tmp_path / "store", volumes[:2])
    store = VolumeStore.open(tmp_path / "store", (4, 4, 4))
    assert len(store) == 0 and "another grid" in caplog.text


def test_bad_volumes_are_refused_naming_them(tmp_path, toy_data):
    volumes, _ = toy_data
    store = filled_store(tmp_path / "store", volumes[:1])
    with pytest.raises(ValueError, match="sub-01_T1w.nii.gz: shape"):
        store.add("sub-01_T1w.nii.gz", "stamp", np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match=r"sub-02_T1w.nii.gz: intensities span .* scale each volume"):
        store.add("sub-02_T1w.nii.gz", "stamp", slices_first(volumes[0]) * 300)
    assert len(store) == 1


def test_the_sampler_draws_the_same_batches_from_the_store_as_from_ram(tmp_path, toy_data, tiny_config):
    volumes, labels = toy_data
    stored = StoredVolumes(filled_store(tmp_path / "store", volumes), range(len(volumes)))
    options = dict(
        batch_size=4,
        site_balanced=True,
        min_foreground=0.05,
        content_noise_std=1.0,
        seed=2,
        device=torch.device("cpu"),
        crop_size=24,
    )
    from_disk = SliceSampler(stored, labels, tiny_config, **options)
    in_ram = SliceSampler(stack_volumes(volumes)[0], labels, tiny_config, **options)
    for _ in range(3):
        disk_batch, ram_batch = from_disk.sample(), in_ram.sample()
        assert torch.equal(disk_batch.images, ram_batch.images)
        assert torch.equal(disk_batch.references, ram_batch.references)


def test_training_from_the_store_gives_the_same_bundle_as_from_arrays(
    tmp_path, toy_data, tiny_config, quick_train_config
):
    volumes, labels = toy_data
    stored = StoredVolumes(filled_store(tmp_path / "store", volumes), range(len(volumes)))
    from_disk = train(stored, labels, SITES, tiny_config, quick_train_config, tmp_path / "disk", progress=False)
    in_ram = train(volumes, labels, SITES, tiny_config, quick_train_config, tmp_path / "ram", progress=False)
    assert (from_disk / WEIGHTS_NAME).read_bytes() == (in_ram / WEIGHTS_NAME).read_bytes()
