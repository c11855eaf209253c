"""Baseline harmonizers: their defining properties, and that they shrink the site effect on
simulated data."""

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.qc import between_site_wasserstein
from bids_harmonize.qc.baselines import (
    adjusted_site_anchors,
    baseline_harmonizers,
    fit_nyul,
    match_histogram,
    nyul,
    whitestripe,
    zscore,
)
from bids_harmonize.simulate import add_rician_noise, noise_sigma, simulate_dataset


@pytest.fixture
def two_tissue_image() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.concatenate([rng.normal(400, 20, 6000), rng.normal(900, 25, 14000)]).reshape(20, 20, 50)
    return image, np.ones(image.shape, dtype=bool)


def test_zscore_standardises_the_brain(two_tissue_image) -> None:
    image, mask = two_tissue_image
    out = zscore(image, mask)
    assert out[mask].mean() == pytest.approx(0.0, abs=1e-4)
    assert out[mask].std() == pytest.approx(1.0, abs=1e-4)


def test_whitestripe_centres_white_matter(two_tissue_image) -> None:
    image, mask = two_tissue_image
    out = whitestripe(image, mask, "T1w")
    white = image > 700
    assert abs(np.median(out[white])) < 0.3
    assert np.median(out[~white]) < -5  # GM far below the WM stripe in its units


def test_histogram_matching_reproduces_the_reference_distribution(two_tissue_image) -> None:
    image, mask = two_tissue_image
    reference = np.random.default_rng(1).gamma(3.0, 100.0, 50_000)
    out = match_histogram(image, mask, reference)
    assert np.percentile(out[mask], [10, 50, 90]) == pytest.approx(np.percentile(reference, [10, 50, 90]), rel=0.02)


def test_nyul_maps_landmarks_onto_the_standard_scale(two_tissue_image) -> None:
    image, mask = two_tissue_image
    scale = fit_nyul([image, 2 * image + 100], [mask, mask])
    out_a, out_b = nyul(image, mask, scale), nyul(3 * image - 50, mask, scale)
    assert np.allclose(out_a, out_b, atol=1e-2)


@pytest.fixture(scope="module")
def simulated_scans(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, np.ndarray, str]]:
    dataset = simulate_dataset(
        tmp_path_factory.mktemp("qc") / "bids", n_sites=3, n_subjects=9, resolution_mm=4.0, seed=5
    )
    truth, scans = dataset.ground_truth, []
    for index, (subject, site_label) in enumerate(dataset.site_of_subject.items()):
        site = dataset.site(site_label)
        render = np.asarray(nb.load(truth.render_path(subject, site_label, "T1w")).dataobj)
        image = add_rician_noise(render, noise_sigma(site), np.random.default_rng(index), site.intensity_offset)
        scans.append((image, np.asarray(nb.load(truth.mask_path(subject)).dataobj) > 0, site_label))
    return scans


def test_baselines_reduce_between_site_distance(simulated_scans) -> None:
    train, test = simulated_scans[:3], simulated_scans[3:]
    harmonizers = baseline_harmonizers(*zip(*train, strict=True), target_site="site1")
    masks, sites = [m for _, m, _ in test], [s for _, _, s in test]
    distance = {
        name: between_site_wasserstein([harmonize(i, m, s) for i, m, s in test], masks, sites)
        for name, harmonize in harmonizers.items()
    }
    for name in ("histogram matching", "Nyul (all sites)", "Nyul (target site)"):
        assert distance[name] < 0.5 * distance["none"], distance
    # z-score and WhiteStripe are affine maps: after the metrics' own robust rescaling they
    # leave the distance as it was.
    assert distance["z-score"] == pytest.approx(distance["none"], rel=1e-3)


def test_adjusted_site_anchors_keep_an_age_effect_out_of_the_site_difference() -> None:
    rng = np.random.default_rng(0)
    sites = ["a"] * 10 + ["b"] * 10
    ages = np.concatenate([rng.uniform(20, 40, 10), rng.uniform(50, 80, 10)])  # site b is older
    levels = np.linspace(-0.5, 0.5, 99)
    per_image = np.array([levels - 0.004 * age + (0.1 if site == "b" else 0.0) for site, age in zip(sites, ages)])
    anchors = adjusted_site_anchors(per_image, sites, {"age": list(ages)})
    assert sorted(anchors) == ["a", "b"]
    np.testing.assert_allclose(anchors["b"] - anchors["a"], 0.1, atol=1e-9)  # the scanner's part only
    pooled = per_image[10:].mean(0) - per_image[:10].mean(0)
    assert abs(float(pooled.mean()) - 0.1) > 0.05  # without the adjustment, age would count as site
