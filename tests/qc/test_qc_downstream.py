"""Downstream measures (volume agreement, site effect, age slope, neuroCombat) and the Atropos
tissue volumes, on small seeded synthetic tables and phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from bids_harmonize.qc.downstream import (
    absolute_volume_difference,
    between_site_cov,
    bootstrap,
    combat,
    site_effect,
    slope,
    slope_ratio,
    subject_mean,
)

SITES = ["A", "B", "C"]


def _study(offsets: dict[str, float], seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    sites = [SITES[i % 3] for i in range(n)]
    age = rng.uniform(20, 80, n)
    volume = 700 - 2.0 * age + np.array([offsets[s] for s in sites]) + rng.normal(0, 5, n)
    return volume, age, sites


def test_avdp_and_cov_by_definition():
    assert absolute_volume_difference([110.0, 90.0], [100.0, 100.0]).tolist() == pytest.approx([10.0, 10.0])
    cov = between_site_cov([[100.0, 100.0, 100.0], [90.0, 100.0, 110.0]])
    assert cov == pytest.approx([0.0, 10.0])


def test_site_effect_separates_a_site_offset_from_none():
    shifted = site_effect(*_study({"A": 0.0, "B": 40.0, "C": -40.0}))
    clean = site_effect(*_study({"A": 0.0, "B": 0.0, "C": 0.0}))
    assert shifted.partial_eta_squared > 0.9 and shifted.p_value < 1e-6
    assert clean.partial_eta_squared < 0.15 and clean.p_value > 0.01


def test_site_effect_is_not_fooled_by_age_differing_between_sites():
    """Age is in the model: sites of different mean age but no offset show no site effect."""
    rng = np.random.default_rng(3)
    sites = ["A"] * 30 + ["B"] * 30
    age = np.concatenate([rng.uniform(20, 50, 30), rng.uniform(50, 80, 30)])
    volume = 700 - 2.0 * age + rng.normal(0, 5, 60)
    assert site_effect(volume, age, sites).partial_eta_squared < 0.1
    assert site_effect(volume, np.zeros(60), sites).partial_eta_squared > 0.8  # without age it would be


def test_slope_ratio_is_one_for_the_truth_and_tracks_a_halved_effect():
    volume, age, _ = _study({"A": 0.0, "B": 0.0, "C": 0.0})
    assert slope(volume, age) == pytest.approx(-2.0, rel=0.05)
    same = slope_ratio(volume, volume, age)
    assert same.value == pytest.approx(1.0) and same.low == pytest.approx(1.0) and same.high == pytest.approx(1.0)
    halved = slope_ratio(700 - 1.0 * age, volume, age)
    assert halved.low < 0.5 < halved.high or halved.value == pytest.approx(0.5, rel=0.05)


def test_bootstrap_interval_holds_the_estimate():
    values = np.random.default_rng(0).normal(5.0, 1.0, 40)
    estimate = subject_mean(values)
    assert estimate.low < estimate.value < estimate.high
    assert estimate.value == pytest.approx(values.mean())
    fixed = bootstrap(lambda idx: 1.0, 10)
    assert (fixed.value, fixed.low, fixed.high) == (1.0, 1.0, 1.0)


def test_combat_removes_site_offsets_and_keeps_the_reference_site():
    volume, age, sites = _study({"A": 0.0, "B": 40.0, "C": -40.0})
    rng = np.random.default_rng(1)
    table = np.column_stack([volume, volume * 0.8 + rng.normal(0, 8, len(volume)), rng.normal(500, 10, len(volume))])
    adjusted = combat(table, sites, "A", age)
    at_a = np.array(sites) == "A"
    np.testing.assert_allclose(adjusted[at_a], table[at_a], rtol=1e-6)
    assert site_effect(adjusted[:, 0], age, sites).partial_eta_squared < 0.2
    assert slope(adjusted[:, 0], age) == pytest.approx(-2.0, rel=0.1)


def test_combat_without_age_weakens_a_confounded_age_effect():
    """The failure the benchmark shows: site and age confounded, age not protected."""
    rng = np.random.default_rng(5)
    sites = ["A"] * 30 + ["B"] * 30
    age = np.concatenate([rng.uniform(20, 55, 30), rng.uniform(45, 80, 30)])
    volume = 700 - 2.0 * age + np.where(np.array(sites) == "B", 30.0, 0.0) + rng.normal(0, 5, 60)
    table = np.column_stack([volume, 0.8 * volume + rng.normal(0, 8, 60), 500 + rng.normal(0, 10, 60)])
    protected = slope(combat(table, sites, "A", age)[:, 0], age)
    unprotected = slope(combat(table, sites, "A", None)[:, 0], age)
    assert protected == pytest.approx(-2.0, rel=0.15)
    assert abs(unprotected) < 0.75 * 2.0


def _three_tissue_phantom(seed: int = 0, noise: float = 0.03):
    """A 48^3 ball: WM core, GM shell, CSF rim, with T1w-like intensities and Gaussian noise."""
    grid = np.indices((48, 48, 48)).astype(np.float32) - 23.5
    radius = np.sqrt((grid**2).sum(axis=0))
    labels = np.select([radius < 10, radius < 16, radius < 20], [3, 2, 1], 0)
    means = np.array([0.0, 0.15, 0.5, 0.85], dtype=np.float32)
    image = means[labels] + np.random.default_rng(seed).normal(0, noise, labels.shape).astype(np.float32)
    return image, labels > 0, labels


def test_atropos_volumes_match_a_known_phantom_and_ignore_units():
    pytest.importorskip("ants")
    from bids_harmonize.qc.volumes import tissue_volumes

    image, mask, labels = _three_tissue_phantom()
    volumes = tissue_volumes(image, mask, voxel_volume_ml=1.0)
    for tissue, code in (("CSF", 1), ("GM", 2), ("WM", 3)):
        assert volumes[tissue] == pytest.approx(float((labels == code).sum()), rel=0.05)
    rescaled = tissue_volumes(image * 2200.0 + 30.0, mask, voxel_volume_ml=1.0)
    for tissue in volumes:
        assert rescaled[tissue] == pytest.approx(volumes[tissue], rel=1e-3)


def test_atropos_volumes_do_not_depend_on_the_field_of_view_around_the_brain():
    pytest.importorskip("ants")
    from bids_harmonize.qc.volumes import tissue_volumes

    image, mask, _ = _three_tissue_phantom()
    padded_image, padded_mask = np.pad(image, 20, constant_values=0.3), np.pad(mask, 20)
    volumes, padded = tissue_volumes(image, mask, 1.0), tissue_volumes(padded_image, padded_mask, 1.0)
    for tissue in volumes:
        assert padded[tissue] == pytest.approx(volumes[tissue], abs=0.5)


def test_atropos_refuses_a_constant_image():
    pytest.importorskip("ants")
    from bids_harmonize.qc.volumes import tissue_volumes

    _, mask, _ = _three_tissue_phantom()
    with pytest.raises(ValueError, match="constant"):
        tissue_volumes(np.ones(mask.shape), mask, 1.0)


def test_atropos_leaves_no_files_in_the_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from bids_harmonize.qc.volumes import tissue_volumes

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rng = np.random.default_rng(0)
    image = rng.normal(1.0, 0.1, (24, 24, 24)).astype(np.float32)
    image[6:18, 6:18, 6:18] += 1.0
    image[9:15, 9:15, 9:15] += 1.0
    mask = np.zeros(image.shape, bool)
    mask[3:21, 3:21, 3:21] = True
    tissue_volumes(image, mask, 1.0)
    assert list(tmp_path.iterdir()) == []
    assert tempfile.tempdir == str(tmp_path)  # restored
