"""benchmarks/downstream_limits.py: the anchors it builds and the rows it reads back, on small
synthetic inputs (nothing simulated or segmented)."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_loader import benchmark_module


@pytest.fixture(scope="module")
def limits():
    pytest.importorskip("neuroCombat")  # downstream.py, which it builds on, imports it
    yield from benchmark_module("downstream_limits")


def test_leave_one_out_anchors_never_hold_the_subject_they_map(limits):
    sites = limits.ds.SITES
    quantiles = {(subject, site): np.full(3, float(i)) for i, subject in enumerate("abc") for site in sites}
    anchors = limits.leave_one_out(quantiles, "a")
    assert set(anchors) == set(sites)
    assert all(np.allclose(anchors[site], 1.5) for site in sites)  # the mean of b (1) and c (2)


def test_recorded_rows_give_each_source_sites_mean_volume_difference(limits, tmp_path):
    table = tmp_path / "volumes.csv"
    lines = ["method,set,subject,site,age,CSF_ml,GM_ml,WM_ml"]
    for subject, gm in (("01", 100.0), ("02", 200.0)):
        lines.append(f"m,traveling,{subject},site1,50,1,{gm},{gm}")
        for site, change in (("site2", 0.10), ("site3", -0.05), ("site4", 0.0)):
            lines.append(f"m,traveling,{subject},{site},50,1,{gm * (1 + change)},{gm}")
    lines.append("m,study,01,site2,50,1,999,999")  # study rows do not count
    table.write_text("\n".join(lines) + "\n")
    rows = limits.recorded_avdp(table, "m")
    assert rows["site2"]["GM"] == pytest.approx(10.0)
    assert rows["site3"]["GM"] == pytest.approx(5.0)
    assert rows["site4"] == {"GM": pytest.approx(0.0), "WM": pytest.approx(0.0)}
    with pytest.raises(SystemExit, match="no traveling rows"):
        limits.recorded_avdp(table, "another method")


def test_a_larger_study_deals_each_batch_by_the_benchmarks_age_table(limits):
    from types import SimpleNamespace

    ds = limits.ds

    class FakeRender:
        labels = [f"{i + 1:02d}" for i in range(56)]
        dataset = SimpleNamespace(site=lambda label: label)

        def subject(self, index):
            return SimpleNamespace(label=f"{index + 1:02d}", age=20 + index % 61, sex="MF"[index % 2], brain_mask=None)

        def scan(self, subject, index, site, stream):
            return np.full(3, float(index))

    model = SimpleNamespace(quantiles=lambda image: np.full(99, image.data[0]))
    study = limits.larger_study(FakeRender(), model, batches=2)
    assert len(study.sites) == 2 * 48 and np.array(study.quantiles).shape == (96, 99)
    for batch in (study.sites[:48], study.sites[48:]):
        assert {site: batch.count(site) for site in ds.SITES} == {site: 12 for site in ds.SITES}
    indices = np.array(study.quantiles)[:, 0].astype(int)  # each row's subject, through the fake scan
    assert sorted(indices) == list(range(56, 56 + 96))  # new subjects only, each once
    assert study.covariates["age"] == [20.0 + i % 61 for i in indices]
    assert study.covariates["sex=M"] == [float(i % 2 == 0) for i in indices]
    old = [a for a, s in zip(study.covariates["age"][:48], study.sites[:48]) if s == ds.SITES[-1]]
    young = [a for a, s in zip(study.covariates["age"][:48], study.sites[:48]) if s == ds.TARGET]
    assert np.mean(old) > np.mean(young)  # the table's confound: the target leans young
