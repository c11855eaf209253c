"""The dataset-relative QC flag (robust z-score, median/MAD) on synthetic numbers, and on the
real heads' QC numbers of benchmarks/results/brain_mask.csv (committed, so it runs everywhere)."""

import csv
from pathlib import Path

import numpy as np
import pytest

from bids_harmonize.qc import metrics

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "brain_mask.csv"
IXI = ROOT.parent / "shared" / "data" / "ixi_hh"


def test_robust_z_is_median_and_scaled_mad():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # one wild value barely moves median and MAD
    z = metrics.robust_z(values)
    assert z[2] == 0.0
    assert z[3] == pytest.approx(1.0 / (metrics.MAD_TO_SD * 1.0))
    assert z[4] > 50


def test_robust_z_scale_floor_and_degenerate_reference():
    flat = [0.95] * 10
    assert np.isnan(metrics.robust_z(0.94, flat))  # MAD 0 and no floor: undefined, never flagged
    assert metrics.robust_z(0.94, flat, min_scale=0.005) == pytest.approx(-2.0)
    assert np.isnan(metrics.robust_z(1.0, [np.nan, np.inf]))


def test_dataset_outlier_needs_enough_images_and_flags_only_the_bad_side():
    rng = np.random.default_rng(0)
    dataset = list(0.95 + 0.005 * rng.standard_normal(20))
    assert metrics.dataset_outlier(0.80, dataset[: metrics.MIN_DATASET_IMAGES - 1]) is None
    low = metrics.dataset_outlier(0.90, [*dataset, 0.90], bad="low")
    assert low.flagged and low.z < -metrics.ROBUST_Z_LIMIT and low.images == 21
    high = metrics.dataset_outlier(0.99, [*dataset, 0.99], bad="low")
    assert not high.flagged and high.z > metrics.ROBUST_Z_LIMIT  # unusually good is not a failure
    assert metrics.dataset_outlier(0.99, [*dataset, 0.99], bad="both").flagged
    typical = metrics.dataset_outlier(dataset[0], dataset, bad="low")
    assert not typical.flagged and abs(typical.z) < 3
    with pytest.raises(ValueError):
        metrics.dataset_outlier(0.9, dataset, bad="sideways")


def test_false_alarm_rate_of_a_clean_gaussian_dataset_is_small():
    rng = np.random.default_rng(1)
    flags = 0
    for _ in range(200):
        dataset = list(rng.normal(0.95, 0.005, 30))
        flags += sum(metrics.dataset_outlier(v, dataset, bad="low").flagged for v in dataset)
    assert flags / (200 * 30) < 0.002  # one-sided normal tail beyond 3.5 SD is 0.02 %


def test_mask_check_outliers_reads_the_sidecar_keys():
    rng = np.random.default_rng(2)
    dataset = [
        {"TemplateMaskDice": 0.95 + 0.004 * d, "BoundaryDistance95mm": 4.5 + 0.4 * b}
        for d, b in rng.standard_normal((12, 2))
    ]
    odd = {"TemplateMaskDice": 0.91, "BoundaryDistance95mm": 4.5}
    result = metrics.mask_check_outliers(odd, [*dataset, odd])
    assert result["TemplateMaskDice"].flagged and not result["BoundaryDistance95mm"].flagged
    far = {"TemplateMaskDice": 0.95, "BoundaryDistance95mm": 8.0}
    assert metrics.mask_check_outliers(far, [*dataset, far])["BoundaryDistance95mm"].flagged
    assert metrics.mask_check_outliers(odd, dataset[:5]) == {}


def _real_heads():
    with open(RESULTS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    right = [
        {"TemplateMaskDice": float(r["qc_dice"]), "BoundaryDistance95mm": float(r["qc_boundary_mm"])} for r in rows
    ]
    broken = [
        {"TemplateMaskDice": float(r["broken_qc_dice"]), "BoundaryDistance95mm": float(r["broken_boundary_mm"])}
        for r in rows
    ]
    return rows, right, broken


def test_on_the_27_real_heads_no_false_alarm_and_every_broken_registration_flagged():
    rows, right, broken = _real_heads()
    assert len(rows) == 27
    for check in right:
        assert not any(o.flagged for o in metrics.mask_check_outliers(check, right).values())
    for i, check in enumerate(broken):
        dataset = [check, *right[:i], *right[i + 1 :]]
        assert metrics.mask_check_outliers(check, dataset)["TemplateMaskDice"].flagged


def test_the_qc_numbers_cover_every_ixi_head():
    if not (IXI / "participants.tsv").is_file():
        pytest.skip("../shared/data/ixi_hh is not present")
    rows, _, _ = _real_heads()
    measured = {r["subject"] for r in rows if r["dataset"] == "ixi_hh"}
    heads = {p.name for p in IXI.glob("sub-*") if p.is_dir()}
    assert heads == measured
