import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")
sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_bids, standard_scans  # noqa: E402

REALMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "realmix"


@pytest.fixture
def multisite_bids(tmp_path: Path) -> Path:
    return make_bids(tmp_path / "bids", standard_scans())


@pytest.fixture
def realmix() -> Path:
    if not (REALMIX / "dataset_description.json").is_file():
        pytest.skip("../shared/data/realmix is not present")
    return REALMIX
