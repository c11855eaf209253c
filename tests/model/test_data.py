"""Loading volumes into one tensor and sampling 2.5D batches from it."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from bids_harmonize.model.data import SliceSampler, data_fingerprint, stack_volumes
from bids_harmonize.model.slices import fit_in_plane, foreground_fraction, gather_stacks, restore_in_plane


def make_sampler(volumes, labels, config, **overrides) -> SliceSampler:
    stacked, _ = stack_volumes(volumes)
    options = dict(
        batch_size=6, site_balanced=True, min_foreground=0.05, content_noise_std=1.0, seed=1, device=torch.device("cpu")
    )
    return SliceSampler(stacked, labels, config, **{**options, **overrides})


def test_stack_volumes_puts_the_axial_axis_first_in_float16(toy_data):
    volumes, _ = toy_data
    stacked, hashes = stack_volumes(volumes)
    assert stacked.dtype == torch.float16
    assert stacked.shape == (len(volumes), volumes[0].shape[2], *volumes[0].shape[:2])
    torch.testing.assert_close(stacked[1, 4].float(), torch.from_numpy(volumes[1][:, :, 4]), atol=1e-3, rtol=0)
    assert len(set(hashes)) == len(volumes)


def test_nifti_paths_load_like_arrays(tmp_path, toy_data):
    volumes, labels = toy_data
    paths = []
    for index, volume in enumerate(volumes[:2]):
        paths.append(tmp_path / f"vol{index}.nii.gz")
        nib.save(nib.Nifti1Image(volume, np.eye(4)), paths[-1])
    assert stack_volumes(paths)[1] == stack_volumes(volumes[:2])[1]


def test_fingerprint_depends_on_site_assignment(toy_data):
    _, hashes = stack_volumes(toy_data[0])
    labels = toy_data[1]
    assert data_fingerprint(hashes, labels, ["a", "b"]) != data_fingerprint(hashes, labels[::-1], ["a", "b"])


def test_unscaled_or_mismatched_volumes_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        stack_volumes([np.full((4, 4, 4), 300.0)])
    with pytest.raises(ValueError, match="one template grid"):
        stack_volumes([np.zeros((4, 4, 4)), np.zeros((4, 5, 4))])


def test_batches_have_model_shapes_and_only_foreground_centres(toy_data, tiny_config):
    sampler = make_sampler(*toy_data, tiny_config)
    batch = sampler.sample()
    size = tiny_config.image_size
    assert batch.images.shape == (6, 3, size, size) and batch.images.dtype == torch.float32
    assert batch.content_noise.shape == (6, tiny_config.content_channels, size // 4, size // 4)
    assert batch.latents.shape == batch.diversity_latents.shape == (6, tiny_config.latent_dim)
    usable = [
        foreground_fraction(sampler.volumes.volumes[v, c][None].float())[0] >= 0.05
        for v, c in zip(sampler.slice_volume, sampler.slice_centre)
    ]
    assert all(usable) and len(usable) < sampler.volumes.shape[0] * sampler.volumes.shape[1]


def test_site_balanced_sampling_evens_out_unequal_sites(toy_data, tiny_config):
    volumes, _ = toy_data
    labels = [0, 1, 1, 1, 1, 1]  # one volume of site 0 against five of site 1
    for balanced, expected_share in [(True, 0.5), (False, 1 / 6)]:
        sampler = make_sampler(volumes, labels, tiny_config, batch_size=512, site_balanced=balanced)
        share = (sampler.sample().source_sites == 0).float().mean().item()
        assert share == pytest.approx(expected_share, abs=0.07)


def test_sampler_state_restores_the_exact_next_batch(toy_data, tiny_config):
    sampler = make_sampler(*toy_data, tiny_config)
    sampler.sample()
    state = {name: value.clone() for name, value in sampler.state_dict().items()}
    expected = sampler.sample()
    fresh = make_sampler(*toy_data, tiny_config)
    fresh.load_state_dict(state)
    replay = fresh.sample()
    assert torch.equal(replay.images, expected.images) and torch.equal(replay.content_noise, expected.content_noise)
    assert torch.equal(replay.target_sites, expected.target_sites)


def test_a_site_without_foreground_is_an_error(toy_data, tiny_config):
    volumes, labels = toy_data
    empty = [np.full_like(volumes[0], -1.0)] + volumes[1:]
    with pytest.raises(ValueError, match="no slice"):
        make_sampler(empty, [0, 1, 1, 1, 1, 1], tiny_config)


def test_stacks_replicate_the_edge_slices():
    volumes = torch.arange(4.0)[None, :, None, None].expand(1, 4, 2, 2)
    stacks = gather_stacks(volumes, torch.zeros(2, dtype=torch.long), torch.tensor([0, 3]), in_channels=3)
    assert stacks[:, :, 0, 0].tolist() == [[0, 0, 1], [2, 3, 3]]


@pytest.mark.parametrize(("height", "width"), [(7, 9), (4, 4), (3, 10), (12, 2)])
def test_fit_and_restore_in_plane_are_exact_inverses_where_they_overlap(height, width):
    images = torch.randn(2, height, width)
    fitted = fit_in_plane(images, 6)
    assert fitted.shape == (2, 6, 6)
    marker = torch.full_like(images, 99.0)
    restored = restore_in_plane(fitted, height, width, original=marker)
    seen = restored != 99.0
    assert torch.equal(restored[seen], images[seen])
    assert seen.all() == (height <= 6 and width <= 6)
