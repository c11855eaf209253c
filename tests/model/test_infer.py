"""Volume inference: geometry, overlap averaging, determinism, styles, batch size."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from bids_harmonize.model.infer import (
    MAX_BATCH,
    auto_batch_size,
    harmonize_volume,
    prediction_counts,
    random_style,
    reference_style,
)
from bids_harmonize.model.networks import Translator, build_translator, preset_config
from bids_harmonize.model.slices import fit_in_plane
from rounding import rounding_tolerance, summed_terms


class ShiftTranslator(Translator):
    """Adds the first style value to its input: makes the geometry and averaging checkable."""

    def translate(self, images: torch.Tensor, style: torch.Tensor, source_style=None) -> torch.Tensor:
        return images + style[:, :1, None, None]


@pytest.fixture()
def shift_translator(tiny_config) -> ShiftTranslator:
    return ShiftTranslator(tiny_config)


@pytest.mark.parametrize("shape", [(28, 30, 12), (20, 20, 1), (40, 25, 5)])
@pytest.mark.parametrize("slice_axis", [0, 2])
def test_output_keeps_the_grid_and_each_slice_averages_its_predictions(shift_translator, shape, slice_axis):
    volume = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    style = torch.full((shift_translator.config.style_dim,), 0.25)
    output = harmonize_volume(shift_translator, volume, style, batch_size=4, slice_axis=slice_axis)
    assert output.shape == volume.shape and output.dtype == np.float32
    # Inside the 32 x 32 field of view every prediction is volume + 0.25; outside it (the crop
    # of a 40-pixel axis) the input is kept.
    in_plane = [n for axis, n in enumerate(shape) if axis != slice_axis]
    seen = np.ones(shape, dtype=bool)
    if max(in_plane) > 32:
        index = [slice(None)] * 3
        crop_axis = [axis for axis in range(3) if axis != slice_axis and shape[axis] > 32][0]
        start = (shape[crop_axis] - 32 + 1) // 2
        mask = np.zeros(shape[crop_axis], dtype=bool)
        mask[start : start + 32] = True
        index[crop_axis] = mask
        seen = np.zeros(shape, dtype=bool)
        seen[tuple(index)] = True
        np.testing.assert_allclose(output[~seen], volume[~seen], atol=1e-6)
    np.testing.assert_allclose(output[seen], volume[seen] + 0.25, atol=1e-6)


def test_every_slice_averages_as_many_predictions_as_there_are_channels():
    assert prediction_counts(10, 3, torch.device("cpu")).tolist() == [3.0] * 10
    counts = prediction_counts(10, 5, torch.device("cpu"))
    assert counts.sum().item() == 50 and counts[2:8].tolist() == [5.0] * 6


def test_inference_is_deterministic_and_independent_of_batch_size_up_to_rounding(tiny_config):
    """Same inputs and batch size on one machine: the same bits. Another batch size: the same
    result up to float32 rounding, because the kernels sum in another order for another batch
    shape (and for another CPU's vector width), so bits are not promised (see rounding.py)."""
    torch.manual_seed(0)
    translator = build_translator(tiny_config).eval()
    with torch.no_grad():  # move the zero-initialised layers off the identity
        for parameter in translator.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    volume = np.random.default_rng(1).uniform(-1, 1, size=(28, 30, 7)).astype(np.float32)
    style, source = torch.randn(tiny_config.style_dim), torch.randn(tiny_config.style_dim)

    def harmonize(batch_size: int) -> np.ndarray:
        return harmonize_volume(translator, volume, style, source_style=source, batch_size=batch_size)

    first = harmonize(3)
    assert np.array_equal(first, harmonize(3))
    stack = fit_in_plane(torch.from_numpy(volume[:, :, :3]).movedim(-1, 0)[None], tiny_config.image_size)
    with torch.inference_mode():
        terms = summed_terms(translator, lambda: translator.translate(stack, style[None], source[None]))
    tolerance = rounding_tolerance(terms, np.abs(first).max())
    # The bound is far below what the translation does, so a batching bug could not hide in it.
    assert np.abs(first - volume).max() > 100 * tolerance
    for batch_size in (1, 2, 7):
        np.testing.assert_allclose(harmonize(batch_size), first, rtol=0, atol=tolerance)


def test_random_style_is_seeded(tiny_config):
    translator = build_translator(tiny_config)
    assert torch.equal(random_style(translator, 1, seed=5), random_style(translator, 1, seed=5))
    assert not torch.equal(random_style(translator, 1, seed=5), random_style(translator, 1, seed=6))
    assert not torch.equal(random_style(translator, 0, seed=5), random_style(translator, 1, seed=5))


def test_reference_style_averages_foreground_stacks_and_rejects_empty_volumes(tiny_config, toy_data):
    translator = build_translator(tiny_config)
    volume = toy_data[0][0]
    style = reference_style(translator, volume, site_index=0, batch_size=4)
    assert style.shape == (tiny_config.style_dim,)
    # One batch against batches of 4: equal up to float32 rounding (see rounding.py): the style
    # encoder's sums, then the mean over the volume's slices.
    one_batch = functools.partial(reference_style, translator, volume, site_index=0, batch_size=64)
    terms = summed_terms(translator, one_batch) + volume.shape[2]
    torch.testing.assert_close(style, one_batch(), rtol=0, atol=rounding_tolerance(terms, style.abs().max()))
    with pytest.raises(ValueError, match="no slice"):
        reference_style(translator, np.full((28, 30, 6), -1.0), site_index=0)


def test_non_3d_volumes_are_rejected(shift_translator):
    with pytest.raises(ValueError, match="3-D"):
        harmonize_volume(shift_translator, np.zeros((4, 4)), torch.zeros(shift_translator.config.style_dim))


def test_automatic_batch_size_follows_free_memory(monkeypatch):
    from bids_harmonize.model import infer

    config, cpu = preset_config("reference", num_sites=2), torch.device("cpu")
    per_slice = infer.bytes_per_slice(config, cpu)
    monkeypatch.setattr(infer, "free_memory_bytes", lambda device: int(6 * per_slice / infer.MEMORY_SHARE))
    assert auto_batch_size(config, cpu) == 6
    monkeypatch.setattr(infer, "free_memory_bytes", lambda device: 0)
    assert auto_batch_size(config, cpu) == 1
    monkeypatch.setattr(infer, "free_memory_bytes", lambda device: 10**15)
    assert auto_batch_size(config, cpu) == MAX_BATCH["cpu"]
