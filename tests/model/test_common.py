"""Device choice fails fast, naming the fix, when a GPU is asked for and absent."""

from __future__ import annotations

import pytest
import torch

from bids_harmonize.model import DeviceUnavailable, resolve_device


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_gpu_is_an_error_that_names_the_fix():
    with pytest.raises(DeviceUnavailable, match="--gpus all"):
        resolve_device("cuda:0")
