"""OUT/group.html: site inventory, training curves, the site effect before vs after, and the
tissue volumes before vs after with covariates (reports/downstream.py).

Written by the group level (after training) and rewritten by every participant run that
harmonizes, so it always covers what OUT_DIR holds. The site effect uses the template-grid
outputs of the images harmonized with the *current* bundle of each contrast, and reuses the
QC metrics of bids_harmonize.qc (site classifier, between-site Wasserstein distance).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import nibabel as nb
import numpy as np

from bids_harmonize.bids.covariates import Covariates
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.qc import between_site_wasserstein, site_classifier_accuracy
from bids_harmonize.reports import group_figures, html
from bids_harmonize.reports.citation import kept_snapshot
from bids_harmonize.reports.collect import (
    ImageOutputs,
    Template,
    derivative_files,
    read_sites_table,
    record_from_relpath,
)
from bids_harmonize.reports.downstream import downstream_section
from bids_harmonize.utils import atomic_write_text

LOGGER = logging.getLogger("bids_harmonize.reports")
MAX_IMAGES_PER_SITE = 40  # site-effect metrics use at most this many images of each site (first by path)
INVENTORY_COLUMNS = ("path", "participant_id", "session_id", "contrast", "site", "provenance", "evidence", "warnings")


def _load(path: Path) -> np.ndarray:
    return np.asarray(nb.load(path).dataobj, np.float32)


def inventory_section(rows: list[dict[str, str]]) -> str:
    if not rows:
        return html.box("note", "No OUT/sites.tsv yet: the group level writes it (or `group --sites-only`).")
    by_site: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_site[row["site"]].append(row)
    summary = [
        {
            "site": site,
            "images": len(members),
            "provenance": ", ".join(f"{k} ({v})" for k, v in Counter(m["provenance"] for m in members).items()),
            "evidence (first image)": members[0].get("evidence", ""),
            "images with warnings": sum(1 for m in members if m.get("warnings", "n/a") != "n/a"),
        }
        for site, members in sorted(by_site.items())
    ]
    listing = html.table(rows, INVENTORY_COLUMNS)
    return (
        html.table(summary, list(summary[0]), numeric=("images", "images with warnings"))
        + f"<details><summary>All {len(rows)} image(s)</summary>{listing}</details>"
    )


def training_section(out_dir: Path, bundles: dict[str, Path]) -> str:
    parts = []
    for contrast, bundle in sorted(bundles.items()):
        card = json.loads((bundle / "model.json").read_text())
        training = card.get("training") or {}
        parts.append(
            f"<h3>{html.esc(contrast)}</h3>"
            + html.key_values(
                [
                    ("bundle", bundle),
                    ("created", card.get("created", "")),
                    ("preset", card.get("preset", "")),
                    ("iterations", training.get("iterations", "n/a")),
                    ("weights kept", kept_snapshot(training)),
                    ("batch size", training.get("batch_size", "n/a")),
                    ("seed", card.get("seed", "n/a")),
                    ("sites", ", ".join(s["name"] for s in card.get("sites", []))),
                    ("weights SHA-256", (card.get("weights") or {}).get("sha256", "")),
                ]
            )
        )
        logs = OutputLayout(out_dir).training_logs(contrast)
        if not logs:
            parts.append(
                html.box("note", f"No training log in {OutputLayout(out_dir).logs} (the bundle was trained elsewhere).")
            )
            continue
        records = group_figures.read_training_log(logs[-1])
        if records:
            parts.append(
                html.paragraph(
                    f"Loss terms against iteration, from {logs[-1].name} (mean over each log window), in groups, "
                    "each with what a healthy run looks like.",
                    "note",
                )
            )
            for title, terms, caption in group_figures.grouped_terms(records):
                parts.append(
                    f"<h4>{html.esc(title)}</h4>" + html.figure(group_figures.training_curves(records, terms), caption)
                )
    return "".join(parts) or html.box("note", "No model bundle yet: `bids_harmonize BIDS OUT group` trains one.")


def _harmonized_items(
    out_dir: Path, rows: list[dict[str, str]], contrast: str, template: Template, sha: str
) -> tuple[list[ImageOutputs], int]:
    """Images of ``contrast`` harmonized with the bundle ``sha`` (and how many used another)."""
    chosen, other = [], 0
    for row in rows:
        if row["contrast"] != contrast:
            continue
        record = record_from_relpath(out_dir, row["path"])
        item = ImageOutputs(record, out_dir, derivative_files(out_dir, record, template), {"site": row["site"]})
        if not (item.harmonized and "template_preproc" in item.files):
            continue
        if (item.sidecar("native_harmonized").get("ModelBundle") or {}).get("SHA256") == sha:
            chosen.append(item)
        else:
            other += 1
    return chosen, other


def site_effect_section(out_dir: Path, rows: list[dict[str, str]], template: Template, bundles: dict[str, Path]) -> str:
    parts = []
    mask = _load(Path(template.mask)) > 0
    for contrast, bundle in sorted(bundles.items()):
        sha = (json.loads((bundle / "model.json").read_text()).get("weights") or {}).get("sha256", "")
        items, other = _harmonized_items(out_dir, rows, contrast, template, sha)
        parts.append(f"<h3>{html.esc(contrast)}</h3>")
        if other:
            parts.append(html.paragraph(f"{other} image(s) harmonized with another bundle are left out.", "note"))
        by_site: dict[str, list[ImageOutputs]] = defaultdict(list)
        for item in sorted(items, key=lambda i: i.record.relpath):
            if len(by_site[item.site["site"]]) < MAX_IMAGES_PER_SITE:
                by_site[item.site["site"]].append(item)
        if len(by_site) < 2:
            parts.append(
                html.box(
                    "note",
                    f"{len(items)} image(s) harmonized with the current bundle, from "
                    f"{len(by_site)} site(s): the site effect needs harmonized images of at "
                    "least two sites. Run `participant` with the model to fill this in.",
                )
            )
            continue
        parts.append(_site_effect(by_site, mask))
    return "".join(parts) or html.box("note", "No model bundle yet, so nothing is harmonized.")


def _site_effect(by_site: dict[str, list[ImageOutputs]], mask: np.ndarray) -> str:
    before = {site: [_load(i.files["template_preproc"]) for i in items] for site, items in by_site.items()}
    after = {site: [_load(i.files["template_harmonized"]) for i in items] for site, items in by_site.items()}
    sites = [site for site, items in before.items() for _ in items]
    flat = {"before": [v for vs in before.values() for v in vs], "after": [v for vs in after.values() for v in vs]}
    masks = [mask] * len(sites)
    rows = []
    try:
        scores = {k: site_classifier_accuracy(v, masks, sites) for k, v in flat.items()}
        rows.append(
            {
                "metric": f"site-classifier accuracy, cross-validated (chance {scores['before'].chance:.2f})",
                "before": f"{scores['before'].accuracy:.3f}",
                "after": f"{scores['after'].accuracy:.3f}",
            }
        )
    except ValueError as err:
        rows.append({"metric": "site-classifier accuracy", "before": f"not computed: {err}", "after": ""})
    distance = {k: between_site_wasserstein(v, masks, sites) for k, v in flat.items()}
    rows.append(
        {
            "metric": "between-site Wasserstein distance (brain, rescaled)",
            "before": f"{distance['before']:.4f}",
            "after": f"{distance['after']:.4f}",
        }
    )
    counts = ", ".join(f"{site}: {len(items)}" for site, items in by_site.items())
    mosaic = group_figures.site_mosaic(
        [(f"{site} / {items[0].label}", before[site][0], after[site][0]) for site, items in by_site.items()], mask
    )
    return (
        html.paragraph(
            f"Template-grid images per site ({counts}); lower is better for both metrics: "
            "a classifier near chance and a small distance mean little site signature left.",
            "note",
        )
        + html.table(rows, ("metric", "before", "after"))
        + html.figure(
            group_figures.densities_before_after(before, after, mask),
            "Per-site brain intensity densities (each image robustly rescaled first).",
        )
        + html.figure(mosaic, "One image per site, before | after (template grid, each in its own window).")
    )


def _guarded(title: str, build: Any) -> str:
    try:
        return build()
    except Exception as err:  # the group report must not be lost to one bad file
        LOGGER.warning("group report section %r failed: %s", title, err)
        return html.box("fail", f"Could not build this section: {type(err).__name__}: {err}")


def group_report(
    out_dir: Path,
    template: Template,
    bundles: dict[str, Path],
    methods: str | None = None,
    covariates: Covariates | None = None,
) -> Path:
    """Write OUT/group.html from what OUT_DIR holds now (and the covariates of the raw dataset)."""
    out_dir = Path(out_dir)
    rows = read_sites_table(out_dir)
    sections = [
        ("inventory", "Site inventory", _guarded("inventory", lambda: inventory_section(rows))),
        ("training", "Training", _guarded("training", lambda: training_section(out_dir, bundles))),
        (
            "site-effect",
            "Site effect before / after",
            _guarded("site effect", lambda: site_effect_section(out_dir, rows, template, bundles)),
        ),
        (
            "volumes",
            "Tissue volumes before / after, with covariates",
            _guarded("volumes", lambda: downstream_section(out_dir, rows, covariates, bundles)),
        ),
    ]
    if methods:
        sections.append(("methods", "Methods", html.pre(methods)))
    n_sites = len({r["site"] for r in rows})
    text = html.page(
        "bids_harmonize: group report", f"{len(rows)} image(s), {n_sites} site(s); output folder {out_dir}", sections
    )
    return atomic_write_text(OutputLayout(out_dir).group_report, text)
