"""benchmarks/quality.py: the seeds' summary rows and the table's interval cells, on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_loader import benchmark_module


@pytest.fixture(scope="module")
def quality():
    yield from benchmark_module("quality")


def _row(ssim: float, low: float, high: float, accuracy: float) -> dict[str, float]:
    return {"ssim": ssim, "ssim_low": low, "ssim_high": high, "site_accuracy": accuracy, "chance": 0.334}


def test_seed_summary_gives_the_mean_the_sd_and_the_envelope_of_the_intervals(quality):
    per_seed = {"seed 0": _row(0.90, 0.88, 0.92, 0.7), "seed 1": _row(0.94, 0.93, 0.96, 0.5)}
    summary = quality.seed_summary(per_seed, "MURD (cpu)")
    mean, sd = summary["MURD (cpu), mean of 2 seeds"], summary["MURD (cpu), SD over seeds"]
    assert mean["ssim"] == pytest.approx(0.92) and (mean["ssim_low"], mean["ssim_high"]) == (0.88, 0.96)
    assert sd["ssim"] == pytest.approx(np.std([0.90, 0.94], ddof=1)) and "ssim_low" not in sd
    assert sd["site_accuracy"] == pytest.approx(np.std([0.7, 0.5], ddof=1))


def test_the_table_prints_an_interval_where_a_row_has_one(quality):
    from harness import _cell

    assert _cell(_row(0.9, 0.88, 0.92, 0.7), "ssim") == "0.9 [0.88, 0.92]"
    assert _cell(_row(0.9, 0.88, 0.92, 0.7), "site_accuracy") == "0.7"
