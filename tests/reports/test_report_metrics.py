"""The report's own numbers: template agreement, rigid fallback, histograms, methods text."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from bids_harmonize.qc import metrics
from bids_harmonize.reports.citation import (
    BIBTEX,
    MethodsFacts,
    ModelUse,
    kept_snapshot,
    methods_markdown,
    write_citation,
)


def _phantom(shape=(40, 48, 40), seed=0):
    """A blurred random 'brain' inside an ellipsoid, so shifts change which structure sits where."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    inside = (((grid - centre[:, None, None, None]) / (np.array(shape)[:, None, None, None] * 0.4)) ** 2).sum(0) < 1
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return np.where(inside, 1.0 + texture, 0.0).astype(np.float32), inside


def test_template_agreement_is_one_for_any_monotonic_copy_and_drops_when_displaced():
    image, mask = _phantom()
    assert metrics.template_agreement(3.0 * image**2 + 7.0, image, mask) == pytest.approx(1.0)
    shifted = np.roll(image, 6, axis=2)
    assert metrics.template_agreement(shifted, image, mask) < metrics.POOR_AGREEMENT


def test_template_agreement_of_a_constant_image_is_nan():
    image, mask = _phantom()
    assert np.isnan(metrics.template_agreement(np.ones_like(image), image, mask))


def test_rigid_fallback_is_recognised_from_the_written_transform(tmp_path):
    rigid = sitk.AffineTransform(3)
    rigid.SetMatrix(sitk.Euler3DTransform((0, 0, 0), 0.1, 0.2, 0.0).GetMatrix())
    scaled = sitk.AffineTransform(3)
    scaled.Scale((1.05, 0.97, 1.0))
    for transform, expected in ((rigid, True), (scaled, False)):
        path = tmp_path / f"{expected}.txt"
        sitk.WriteTransform(transform, str(path))
        assert metrics.fell_back_to_rigid(path) is expected
    assert metrics.transform_scales(tmp_path / "False.txt") == pytest.approx([1.05, 1.0, 0.97], abs=1e-6)


def test_model_range_histogram_maps_onto_scanner_units_as_a_density():
    image, mask = _phantom()
    model = np.clip(image - 1.0, -1, 1)
    hist = metrics.training_histogram([metrics.brain_counts(model, mask)] * 2)
    assert hist["density"] == pytest.approx(metrics.histogram(model[mask], metrics.MODEL_RANGE)["density"])
    assert hist["space"].startswith("model range")
    scanner = metrics.to_scanner_units(hist, {"lo": 100.0, "hi": 900.0})
    edges, density = np.asarray(scanner["edges"]), np.asarray(scanner["density"])
    assert edges[0] == pytest.approx(100.0) and edges[-1] == pytest.approx(900.0)
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)


def _card(tmp_path):
    bundle = tmp_path / "models" / "T1w"
    bundle.mkdir(parents=True)
    card = {
        "preset": "tiny",
        "seed": 5,
        "training": {
            "iterations": 321,
            "batch_size": 4,
            "validation": {"held_out_volumes": 2, "every": 20, "selected_step": 140, "scores": [[0, 0.8], [140, 0.7]]},
        },
        "weights": {"sha256": "ab" * 32},
        "sites": [{"name": "SiteA", "signature": {"n_images": 3}}, {"name": "SiteB", "signature": {"n_images": 2}}],
    }
    import json

    (bundle / "model.json").write_text(json.dumps(card))
    return bundle


def test_methods_text_names_what_was_run_and_every_citation_is_in_the_bib(tmp_path):
    facts = MethodsFacts(
        ("T1w",),
        "MNI152NLin2009cSym",
        2,
        "scanner",
        (ModelUse("T1w", _card(tmp_path), "SiteB", "site"),),
        {"bids_harmonize": "9.9.9", "torch": "2.13.0", "nipype": "1.11.0", "pybids": "0.22.0", "SimpleITK": "2.5.7"},
    )
    md, bib, text = write_citation(tmp_path / "out", facts)
    for fact in (
        "bids_harmonize 9.9.9",
        "PyTorch 2.13.0",
        "SimpleITK 2.5.7",
        "321 iterations",
        "tiny preset",
        "5 images from 2 sites",
        "style of site SiteB",
        "MNI152NLin2009cSym",
        "at 2 mm",
        "'scanner'",
        "ab" * 32,
        "iteration 140, which scored best on 2 training images held out",
    ):
        assert fact in text, fact
    cited = {key for key in BIBTEX if f"@{key}" in text}
    assert {"murd", "n4", "nipype", "mni2009"} <= cited
    bib_text = bib.read_text()
    assert all(f"{{{key}," in bib_text for key in cited)
    assert md.read_text() == text


def test_kept_snapshot_says_which_weights_and_why():
    assert kept_snapshot({}) == "those of the last iteration"
    assert "validation was off: too few" in kept_snapshot({"validation": {"off": "too few"}})


def test_methods_text_without_a_model_says_preprocessing_only():
    text = methods_markdown(MethodsFacts(("T1w", "T2w"), "MNI152NLin2009cSym", 1, "scanner"))
    assert "preprocessed only" in text and "@murd" not in text and "T1w and T2w" in text


def test_methods_text_names_the_mask_method_its_version_weights_and_citation(tmp_path):
    method = {
        "Name": "deepbet",
        "Version": "1.0.2",
        "WeightsSHA256": {"model.pt": "cd" * 32, "bbox_model.pt": "ef" * 32},
    }
    _, bib, text = write_citation(
        tmp_path / "out", MethodsFacts(("T1w",), "MNI152NLin2009cSym", 2, "scanner", brain_mask=method)
    )
    assert "deepbet 1.0.2 [@deepbet]" in text and "cd" * 32 in text and "ef" * 32 in text
    assert "skull-stripped image was registered to the skull-stripped template" in text
    assert "@article{deepbet," in bib.read_text() and "10.1016/j.compbiomed.2024.108845" in bib.read_text()
    template = methods_markdown(MethodsFacts(("T1w",), "MNI152NLin2009cSym", 2, "scanner"))
    assert "@deepbet" not in template and "template brain mask was carried back" in template
