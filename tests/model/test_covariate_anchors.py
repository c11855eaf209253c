"""Covariate-adjusted site anchors (model/anchors.py): a site whose subjects are older must not
have its age effect taken for a scanner effect."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bids_harmonize.bids.covariates import read_covariates
from bids_harmonize.model import train
from bids_harmonize.model.anchors import adjusted_site_quantiles, anchor_design, covariate_matrix

LEVELS = np.linspace(0.01, 0.99, 99)


def _population(seed: int = 0, confounded: bool = True):
    """Per-volume quantile functions: one scanner effect per site (site 1 renders 0.1 brighter),
    an age effect shared by both (-0.004 per year at every level), and site 1 older on average."""
    rng = np.random.default_rng(seed)
    base = np.linspace(-0.8, 0.8, len(LEVELS))
    rows, sites, ages = [], [], []
    for site, (low, high) in enumerate([(20, 50), (45, 80)] if confounded else [(20, 80), (20, 80)]):
        for age in rng.uniform(low, high, 30):
            rows.append(base + 0.1 * site - 0.004 * (age - 50) + rng.normal(0, 0.005, len(LEVELS)))
            sites.append(site)
            ages.append(age)
    return torch.tensor(np.array(rows)), torch.tensor(sites), ages


def test_adjusted_anchors_keep_the_age_effect_out_of_the_site_difference():
    quantiles, sites, ages = _population()
    pooled = torch.stack([quantiles[sites == s].mean(0) for s in (0, 1)])
    adjusted, counted = adjusted_site_quantiles(quantiles, sites, covariate_matrix({"age": ages}, len(ages)), 2)
    assert counted == 60
    # The scanner effect alone is +0.1; the pooled difference also carries the older site's age.
    assert float((pooled[1] - pooled[0]).mean()) < 0.06
    np.testing.assert_allclose((adjusted[1] - adjusted[0]).numpy(), 0.1, atol=0.01)
    assert torch.all(adjusted[:, 1:] >= adjusted[:, :-1])  # still quantile functions


def test_missing_values_leave_a_volume_out_of_the_fit_only():
    quantiles, sites, ages = _population()
    ages[3] = float("nan")
    _, counted = adjusted_site_quantiles(quantiles, sites, covariate_matrix({"age": ages}, len(ages)), 2)
    assert counted == 59


def test_a_covariate_that_site_determines_is_refused_with_the_reason():
    _, sites, _ = _population()
    scanner_is_sex = covariate_matrix({"sex=M": [float(s) for s in sites.tolist()]}, len(sites))
    with pytest.raises(ValueError, match="determined by site"):
        anchor_design(sites, scanner_is_sex, 2)
    with pytest.raises(ValueError, match="one value per training volume"):
        covariate_matrix({"age": [1.0, 2.0]}, 3)


def test_covariate_columns_encode_numbers_and_levels_and_drop_constants(tmp_path):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsite_name\n"
        "sub-01\t30\tF\tA\nsub-02\tn/a\tM\tA\nsub-03\t50\tM\tA\nsub-04\t70\tn/a\tA\n"
    )
    covariates = read_covariates(tmp_path, ["age", "sex", "site_name"])
    columns = covariates.columns([("01", None), ("02", None), ("03", None), ("04", None)])
    assert columns == {"age": [30.0, None, 50.0, 70.0], "sex=M": [0.0, 1.0, 1.0, None]}  # site_name: constant


def test_training_with_covariates_records_them_in_the_card(tmp_path, toy_data, tiny_config, anchored_train_config):
    volumes, labels = toy_data
    options = anchored_train_config
    ages = [30.0 + 5 * k for k in range(len(volumes))]
    out = train(
        volumes,
        labels,
        ["siteA", "siteB"],
        tiny_config,
        options,
        tmp_path,
        progress=False,
        anchor_covariates={"age": ages},
    )
    card = json.loads((Path(out) / "model.json").read_text())
    assert card["training"]["anchor_covariates"] == {"columns": ["age"], "volumes": len(volumes)}


def test_the_group_level_warns_and_pools_when_site_determines_a_covariate(tmp_path, caplog):
    from bids_harmonize.levels.training import anchor_covariates

    (tmp_path / "participants.tsv").write_text("participant_id\tsex\nsub-1\tF\nsub-2\tF\nsub-3\tM\nsub-4\tM\n")
    image = lambda k: SimpleNamespace(subject=str(k), session=None)  # noqa: E731
    usable = [SimpleNamespace(image=image(k), site="A" if k < 3 else "B") for k in range(1, 5)]
    config = SimpleNamespace(bids_dir=tmp_path, covariates=None)
    with caplog.at_level(logging.WARNING, logger="bids_harmonize"):
        assert anchor_covariates(config, usable, ["A", "B"]) is None
    assert "NOT adjusted for sex=M" in caplog.text and "determined by site" in caplog.text
    assert read_covariates(tmp_path).names == ["sex"]


def test_a_missing_value_may_travel_as_none_as_the_training_job_json_carries_it():
    matrix = covariate_matrix({"age": [30.0, None, 50.0]}, 3)
    assert matrix.shape == (3, 1) and torch.isnan(matrix[1, 0]) and float(matrix[2, 0]) == 50.0
