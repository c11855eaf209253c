"""Shared fixtures for the model tests: one thread per worker, toy data, a tiny config, and a
briefly trained bundle (trained once per test worker; its quality does not matter)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bids_harmonize.model import MURDConfig, TrainConfig, preset_config, train  # noqa: E402
from toy_data import two_site_volumes  # noqa: E402

# The tiny preset's widths at 32 x 32 input: the toy volumes are 28 x 30 in-plane.
TEST_IMAGE_SIZE = 32


@pytest.fixture(autouse=True, scope="session")
def single_thread() -> None:
    """pytest-xdist runs two workers on two cores; more threads per worker only contend."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_data() -> tuple[list, list[int]]:
    return two_site_volumes(per_site=3, seed=0)


@pytest.fixture(scope="session")
def tiny_config() -> MURDConfig:
    return preset_config("tiny", num_sites=2, image_size=TEST_IMAGE_SIZE)


@pytest.fixture(scope="session")
def quick_train_config() -> TrainConfig:
    return TrainConfig(iterations=4, batch_size=2, log_every=2, checkpoint_every=2, seed=3, style_slices_per_site=8)


@pytest.fixture(scope="session")
def anchored_train_config(quick_train_config) -> TrainConfig:
    """quick_train_config with the site curve anchors on, as the recipes train."""
    from bids_harmonize.model.losses import LossWeights

    anchor = dataclasses.replace(LossWeights(), anchor=10.0)
    return dataclasses.replace(quick_train_config, curve_warmup=5, loss_weights=anchor)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory, toy_data, tiny_config, quick_train_config) -> Path:
    volumes, labels = toy_data
    out_dir = tmp_path_factory.mktemp("bundle")
    signatures = {"siteA": {"Manufacturer": "Acme", "MagneticFieldStrength": 3.0}}
    return train(
        volumes,
        labels,
        ["siteA", "siteB"],
        tiny_config,
        quick_train_config,
        out_dir,
        site_signatures=signatures,
        progress=False,
    )
