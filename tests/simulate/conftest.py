from pathlib import Path

import pytest

from bids_harmonize.simulate import SimulatedDataset, simulate_dataset

# Tiny and coarse: a 4 mm grid keeps each simulation to a couple of seconds.
TINY = {"n_sites": 2, "n_subjects": 3, "contrasts": ("T1w", "T2w"), "resolution_mm": 4.0, "seed": 3}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDataset:
    return simulate_dataset(tmp_path_factory.mktemp("phantom") / "bids", **TINY)


@pytest.fixture(scope="session")
def tiny_dataset_again(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDataset:
    return simulate_dataset(tmp_path_factory.mktemp("phantom_again") / "bids", **TINY)


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"
