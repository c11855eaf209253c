"""benchmarks/downstream.py: the study design (age confounded with site) and the summary of
synthetic measurements, without simulating or segmenting anything."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_loader import benchmark_module


@pytest.fixture(scope="module")
def downstream():
    pytest.importorskip("neuroCombat")
    yield from benchmark_module("downstream")


def test_study_sites_are_balanced_and_confounded_with_age(downstream):
    rng = np.random.default_rng(0)
    ages = {f"{i:02d}": float(age) for i, age in enumerate(rng.integers(20, 81, 48))}
    sites = downstream.assign_study_sites(ages)
    assert sorted(sites) == sorted(ages)
    counts = {site: list(sites.values()).count(site) for site in downstream.SITES}
    assert set(counts.values()) == {downstream.STUDY_PER_SITE}
    mean_age = {site: np.mean([ages[s] for s in sites if sites[s] == site]) for site in downstream.SITES}
    assert mean_age["site1"] < mean_age["site2"] < mean_age["site4"]
    assert mean_age["site4"] - mean_age["site1"] > 10
    assert downstream.assign_study_sites(ages) == sites  # seeded


def _fake_cohort(downstream, rng):
    subjects = [f"{i:02d}" for i in range(56)]
    age = {s: float(rng.uniform(20, 80)) for s in subjects}
    truth = {s: {"CSF": 250 + 2 * age[s], "GM": 800 - 2 * age[s], "WM": 650.0} for s in subjects}
    site_of = downstream.assign_study_sites({s: age[s] for s in subjects[:48]})
    mask = np.ones((2, 2, 2), dtype=bool)
    study = [downstream.Image(s, site_of[s], None, mask) for s in sorted(site_of)]
    traveling = [downstream.Image(s, site, None, mask) for s in subjects[48:] for site in downstream.SITES]
    return downstream.Cohort(study, traveling, {}, age, truth, 0.008)


def _measured(cohort, offset, rng):
    def volumes(images):
        return [
            {t: cohort.truth[im.subject][t] + offset[im.site] + rng.normal(0, 3) for t in ("CSF", "GM", "WM")}
            for im in images
        ]

    return {
        "study": volumes(cohort.study),
        "traveling": volumes(cohort.traveling),
        "ssim": [0.9] * 32,
        "psnr_db": [25.0] * 32,
        "site_accuracy": 0.8,
        "wasserstein": 0.05,
    }


def test_summary_scores_a_site_offset_and_its_removal(downstream, monkeypatch):
    monkeypatch.setattr("bids_harmonize.qc.downstream.BOOTSTRAP_SAMPLES", 200)  # intervals coarser, test faster
    from downstream_report import target_checks

    rng = np.random.default_rng(1)
    cohort = _fake_cohort(downstream, rng)
    shifted = {"site1": 0.0, "site2": 40.0, "site3": -40.0, "site4": 80.0}
    halved = {site: value / 2 for site, value in shifted.items()}
    measured = {
        "none": _measured(cohort, shifted, rng),
        "histogram matching": _measured(cohort, halved, rng),
        "rescan": {
            "traveling": _measured(cohort, shifted, rng)["traveling"][::4],
            "study": _measured(cohort, dict.fromkeys(shifted, 0.0), rng)["study"],
        },
    }
    clean = _measured(cohort, dict.fromkeys(shifted, 0.0), rng)
    measured[downstream.ORACLE] = {"traveling": clean["traveling"]}  # traveling scans only
    rows, seed_rows, fidelity = downstream.summarise(measured, {0: clean, 1: clean}, cohort, "site1", downstream.SITES)
    none, murd = rows["none"], rows["MURD, mean of 2 seeds"]
    assert none["avdp_GM"].value > 5 and murd["avdp_GM"].value < 2
    assert none["eta_GM"].value > 0.5 and murd["eta_GM"].value < 0.3
    assert murd["slope_GM"].low < 1.0 < murd["slope_GM"].high
    assert rows["neuroCombat (age protected)"]["eta_GM"].value < none["eta_GM"].value
    oracle = rows[downstream.ORACLE]
    assert oracle["avdp_GM"].value < 2 and oracle["cov_GM"].value < 2 and oracle["eta_GM"] is None
    assert fidelity.low < 1.0 < fidelity.high  # the fake segmenter measures the truth plus noise
    checks = dict(target_checks(rows))
    assert checks["site partial eta2 <= half the input's (GM, WM)"]
    assert not checks["SSIM and PSNR above every image-level baseline"]  # equal SSIM is no win
