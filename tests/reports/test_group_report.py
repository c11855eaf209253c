"""group.html on a hand-made OUT_DIR: two sites whose contrast differs before and not after."""

import json
import re

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.reports.group import group_report
from bids_harmonize.templates import get_template
from bids_harmonize.workflows.participant import TemplateFiles

TEMPLATE = "MNI152NLin2009cSym"
SHA = "cd" * 32


@pytest.fixture
def template():
    return TemplateFiles(
        TEMPLATE, 2, {"T1w": str(get_template(TEMPLATE, 2, "T1w"))}, str(get_template(TEMPLATE, 2, "mask", "brain"))
    )


def _write(path, data, affine, sidecar=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(data.astype(np.float32), affine).to_filename(path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))


def make_out(root, template, sha_of=lambda index: SHA):
    """Four subjects, two sites; site B's images have a different contrast (gamma) before, none after."""
    img = nb.load(template.images["T1w"])
    t = np.asarray(img.dataobj, np.float32) / 100.0
    rng = np.random.default_rng(0)
    rows = ["path\tparticipant_id\tsession_id\tcontrast\tsite\tprovenance\tevidence\twarnings"]
    for index, site in enumerate(["SiteA", "SiteA", "SiteB", "SiteB"]):
        sub = f"sub-{index + 1:02d}"
        rows.append(f"{sub}/anat/{sub}_T1w.nii.gz\t{sub}\tn/a\tT1w\t{site}\tinferred\tSerial {site}\tn/a")
        before = (t ** (1.0 if site == "SiteA" else 2.2)) * 50 + rng.normal(0, 0.5, t.shape)
        after = t * 50 + rng.normal(0, 0.5, t.shape)
        anat = root / sub / "anat"
        _write(anat / f"{sub}_space-{TEMPLATE}_res-2_desc-preproc_T1w.nii.gz", before, img.affine)
        for name in (f"{sub}_space-{TEMPLATE}_res-2_desc-harmonized_T1w.nii.gz", f"{sub}_desc-harmonized_T1w.nii.gz"):
            _write(anat / name, after, img.affine, {"ModelBundle": {"SHA256": sha_of(index)}, "TargetSite": "SiteA"})
    (root / "sites.tsv").write_text("\n".join(rows) + "\n")
    bundle = root / "models" / "T1w"
    bundle.mkdir(parents=True)
    (bundle / "model.json").write_text(
        json.dumps(
            {
                "preset": "tiny",
                "seed": 0,
                "training": {"iterations": 30, "batch_size": 4},
                "weights": {"sha256": SHA},
                "sites": [{"name": "SiteA"}, {"name": "SiteB"}],
                "created": "now",
            }
        )
    )
    logs = root / "logs"
    logs.mkdir()
    lines = [{"step": s, "lr": 1e-4, "g_identity": 1.0 / s, "d_real": 0.7, "elapsed_s": s} for s in (10, 20, 30)]
    (logs / "training-T1w-20260101-000000_abc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return bundle


def _cell(text, metric):
    row = re.search(rf"<td>{re.escape(metric)}[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>", text)
    return row.group(1), row.group(2)


def test_group_report_shows_inventory_training_and_a_site_effect_that_goes_away(tmp_path, template):
    bundle = make_out(tmp_path, template)
    text = group_report(tmp_path, template, {"T1w": bundle}, methods="METHODS TEXT").read_text()
    for expected in (
        "Site inventory",
        "SiteA",
        "Serial SiteB",
        "iterations",
        "training-T1w-20260101-000000_abc.jsonl",
        "chance 0.50",
        "between-site Wasserstein",
        "METHODS TEXT",
        "SiteA: 2, SiteB: 2",
    ):
        assert expected in text, expected
    assert text.count("data:image/png;base64,") == 4  # 2 loss groups, densities, per-site mosaic
    assert "ln 2 = 0.69" in text and "<h4>Adversarial</h4>" in text and "<h4>Reconstruction</h4>" in text
    accuracy = _cell(text, "site-classifier accuracy, cross-validated")
    distance = _cell(text, "between-site Wasserstein distance")
    assert float(accuracy[0]) > 0.9 and float(accuracy[1]) < float(accuracy[0])
    assert float(distance[1]) < float(distance[0]) / 3


def test_images_harmonized_by_another_bundle_are_left_out(tmp_path, template):
    bundle = make_out(tmp_path, template, sha_of=lambda index: SHA if index < 3 else "old")
    text = group_report(tmp_path, template, {"T1w": bundle}).read_text()
    assert "1 image(s) harmonized with another bundle are left out" in text
    assert (
        "site-classifier accuracy" in text and "not computed: need at least two sites with at least two images" in text
    )


def test_without_a_model_or_sites_table_the_report_says_what_to_run(tmp_path, template):
    text = group_report(tmp_path, template, {}).read_text()
    assert "No OUT/sites.tsv yet" in text and "No model bundle yet" in text
