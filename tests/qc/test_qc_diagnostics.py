"""Downstream diagnostics with covariates (issue 18) on seeded synthetic volume tables, the
covariates of participants.tsv/sessions.tsv, and the group report's section built from OUT."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.covariates import CovariateError, read_covariates
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.qc.diagnostics import StudyImage, diagnose
from bids_harmonize.qc.volumes import TISSUES, volume_rows
from bids_harmonize.reports.collect import record_from_relpath

KINDS = {"age": "numeric", "sex": "categorical"}
OFFSETS = {"siteA": 0.0, "siteB": 60.0, "siteC": -45.0}  # ml added to GM by each scanner


def study(n_per_site=40, seed=0, confounded=False, harmonized=True) -> list[StudyImage]:
    """GM = 760 - 2.5 ml/year * age + 25 ml (male) + the site's offset + noise; after
    harmonization the offset is gone. With ``confounded`` each site samples its own age range."""
    rng = np.random.default_rng(seed)
    images = []
    for k, (site, offset) in enumerate(OFFSETS.items()):
        ages = rng.uniform(20 + 20 * k, 40 + 20 * k, n_per_site) if confounded else rng.uniform(20, 80, n_per_site)
        for i, age in enumerate(ages):
            sex = "M" if i % 2 else "F"
            gm = 760 - 2.5 * age + (25 if sex == "M" else 0) + rng.normal(0, 12)
            before = {"CSF": 300 + 3 * age + rng.normal(0, 15), "GM": gm + offset, "WM": 520 + rng.normal(0, 15)}
            after = {**before, "GM": gm} if harmonized else None
            images.append(StudyImage(f"sub-{site}{i:03d}_T1w", site, before, after, {"age": age, "sex": sex}))
    return images


def gm(result):
    return next(v for v in result.volumes if v.tissue == "GM")


def test_a_removed_site_effect_shows_and_the_age_slope_stays_in_its_interval():
    result = diagnose(study(), ["age", "sex"], KINDS)
    volume = gm(result)
    assert volume.site_before.partial_eta_squared > 0.8 and volume.site_before.p_value < 1e-10
    assert volume.site_after.partial_eta_squared < 0.1 and volume.site_after.p_value > 0.01
    before, after, pooled = volume.effects["age"]
    assert before.low < -2.5 < before.high and before.low <= after.estimate <= before.high
    assert pooled.low < -2.5 < pooled.high
    assert not volume.moved("age") and not volume.pooling_differs("age")
    male = volume.effects["sex M - F"][0]
    assert male.low < 25 < male.high
    assert [c.flagged for c in result.confounds] == [False, False]


def test_a_harmonization_that_also_removes_the_age_effect_is_flagged():
    images = study()
    flattened = [
        StudyImage(i.relpath, i.site, i.before, {**i.after, "GM": 600.0 + (i.after["GM"] - 600.0) * 0.3}, i.covariates)
        for i in images
    ]
    assert gm(diagnose(flattened, ["age"], KINDS)).moved("age")


def test_a_perfect_harmonization_of_a_confounded_study_is_not_flagged_and_recovers_the_slope():
    volume = gm(diagnose(study(confounded=True), ["age", "sex"], KINDS))
    assert not volume.moved("age")  # the site offset is all it removed
    pooled = volume.effects["age"][2]
    assert pooled.low < -2.5 < pooled.high  # the simulated slope, recovered by the pooled analysis


def test_site_and_age_confounded_gives_the_warning():
    result = diagnose(study(confounded=True), ["age", "sex"], KINDS)
    age = next(c for c in result.confounds if c.covariate == "age")
    assert age.test == "ANOVA F" and age.flagged and age.p_value < 1e-6
    sex = next(c for c in result.confounds if c.covariate == "sex")
    assert sex.test == "chi-square" and not sex.flagged


def test_a_categorical_covariate_confounded_with_site_is_found_by_chi_square():
    images = [
        StudyImage(i.relpath, i.site, i.before, i.after, {"sex": "M" if i.site == "siteA" else "F"}) for i in study()
    ]
    (sex,) = diagnose(images, ["sex"], KINDS).confounds
    assert sex.test == "chi-square" and sex.flagged


def test_missing_covariates_are_reported_by_image_and_name_never_dropped_silently():
    images = study()
    images[3] = StudyImage(
        images[3].relpath, images[3].site, images[3].before, images[3].after, {"age": None, "sex": "F"}
    )
    images[7] = StudyImage(images[7].relpath, images[7].site, images[7].before, None, images[7].covariates)
    result = diagnose(images, ["age", "sex"], KINDS)
    assert result.missing == [(images[3].relpath, ["age"])]
    assert result.not_harmonized == [images[7].relpath]
    assert len(result.used) == len(images) - 2


def test_one_site_gives_a_note_not_a_fit():
    images = [i for i in study() if i.site == "siteA"]
    result = diagnose(images, ["age"], KINDS)
    assert result.volumes == [] and "two sites" in result.note


def test_two_thousand_images_are_diagnosed_in_well_under_a_minute():
    images = study(n_per_site=667)
    start = time.perf_counter()
    diagnose(images, ["age", "sex"], KINDS)
    assert time.perf_counter() - start < 10


# ----------------------------------------------------------------------------- covariates
def bids_with_covariates(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "participants.tsv").write_text(
        "participant_id\tage\tsex\tgroup\nsub-01\t34\tF\tcontrol\nsub-02\tn/a\tM\tpatient\nsub-03\t61.5\tM\tcontrol\n"
    )
    (root / "sub-03").mkdir()
    (root / "sub-03" / "sub-03_sessions.tsv").write_text("session_id\tage\tscore\nses-1\t61.5\t3\nses-2\t63\t\n")
    return root


def test_covariates_come_from_participants_and_sessions_with_kinds(tmp_path):
    bids = bids_with_covariates(tmp_path / "bids")
    default = read_covariates(bids)
    assert default.names == ["age", "sex"] and default.kinds == KINDS
    assert default.values("01", None) == {"age": 34.0, "sex": "F"}
    assert default.values("02", None) == {"age": None, "sex": "M"}
    assert default.values("03", "2") == {"age": 63.0, "sex": "M"}  # the session's value wins
    chosen = read_covariates(bids, ["group", "score"])
    assert chosen.kinds == {"group": "categorical", "score": "numeric"}
    assert chosen.values("03", "2")["score"] is None
    with pytest.raises(CovariateError, match="diagnosis: no such column.*columns there: age, sex, group, score"):
        read_covariates(bids, ["age", "diagnosis"])


def test_without_participants_tsv_no_covariate_is_used(tmp_path):
    assert read_covariates(tmp_path).names == []


# ----------------------------------------------------------------------------- the report section
def test_the_report_section_reads_the_participant_tables_and_writes_its_numbers(tmp_path):
    from bids_harmonize.reports.downstream import downstream_section

    out, bundle = tmp_path / "out", tmp_path / "out" / "models" / "T1w"
    bundle.mkdir(parents=True)
    (bundle / "model.json").write_text(json.dumps({"weights": {"sha256": "current"}}))
    layout, rows = OutputLayout(out), []
    bids = tmp_path / "bids"
    bids.mkdir()
    lines = ["participant_id\tage\tsex"]
    for k, image in enumerate(study(n_per_site=12, confounded=True)):
        subject = f"{k:03d}"
        relpath = f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"
        rows.append({"path": relpath, "site": image.site, "contrast": "T1w"})
        record = record_from_relpath(out, relpath)
        lines.append(f"sub-{subject}\t{'n/a' if k == 5 else image.covariates['age']}\t{image.covariates['sex']}")
        for name, volumes in (("native_preproc_volumes", image.before), ("native_harmonized_volumes", image.after)):
            table = layout.output(record, name)
            table.parent.mkdir(parents=True, exist_ok=True)
            derivatives.write_tsv(table, volume_rows(volumes), ("tissue", "volume_ml"))
            sha = "other" if k == 7 else "current"
            derivatives.write_json(table.with_suffix(".json"), {"ModelBundle": {"SHA256": sha}})
    (bids / "participants.tsv").write_text("\n".join(lines) + "\n")
    text = downstream_section(out, rows, read_covariates(bids), {"T1w": bundle})
    assert "Site and age are associated" in text and "sub-005/anat/sub-005_T1w.nii.gz (age)" in text
    assert "anchors were not adjusted for age" in text  # this card records no anchor covariates
    assert "sub-007/anat/sub-007_T1w.nii.gz: harmonized with another model bundle" in text
    assert "<img" in text
    stats = layout.group_volume_stats.read_text().splitlines()
    assert stats[0].split("\t")[:4] == ["contrast", "tissue", "term", "statistic"]
    assert any(line.startswith("T1w\tGM\tsite\tpartial eta-squared") for line in stats)
    assert any("\tage\tsite association: ANOVA F p\t" in line and line.endswith("confounded") for line in stats)
    table = layout.group_volumes.read_text().splitlines()
    assert len(table) == 1 + 36 and table[0].split("\t")[:5] == ["path", "contrast", "site", "age", "sex"]
    assert [c for c in table[0].split("\t") if c.endswith("_ml")] == [
        f"{s}_{t}_ml" for s in ("preproc", "harmonized") for t in TISSUES
    ]


def test_the_confound_warning_says_whether_the_bundles_anchors_knew_the_covariate(tmp_path):
    from bids_harmonize.reports.downstream import anchor_covariates, confound_warning

    card = {"training": {"anchor_covariates": {"columns": ["age", "sex=M"], "volumes": 40}}}
    (tmp_path / "model.json").write_text(json.dumps(card))
    assert anchor_covariates(tmp_path) == ("age", "sex") and anchor_covariates(None) == ()
    assert "fitted at the study's mean age" in confound_warning("age", "ANOVA F", 4.8, 0.02, adjusted=True)
    assert "not adjusted for age" in confound_warning("age", "ANOVA F", 4.8, 0.02)
