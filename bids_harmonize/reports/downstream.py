"""The group report's downstream section: every image's tissue volumes before vs after
harmonization, with the covariates of participants.tsv / sessions.tsv.

Reads only what the participant level wrote (``*_desc-preproc_volumes.tsv`` and
``*_desc-harmonized_volumes.tsv``; nothing is segmented again), joins the covariates, runs
``qc.diagnostics.diagnose`` per contrast, and writes two tables beside the report through
OutputLayout: ``group_volumes.tsv`` (one row per image) and ``group_volume_stats.tsv`` (the
section's numbers). docs/reports.md describes the section.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.covariates import Covariates
from bids_harmonize.bids.naming import sidecar_path
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.qc.diagnostics import Diagnostics, StudyImage, diagnose
from bids_harmonize.qc.volumes import TISSUES, read_volume_table
from bids_harmonize.reports import group_figures, html
from bids_harmonize.reports.collect import record_from_relpath

STATS_COLUMNS = (
    "contrast",
    "tissue",
    "term",
    "statistic",
    "before",
    "before_low",
    "before_high",
    "after",
    "after_low",
    "after_high",
    "flag",
)
LISTED = 20  # images named in full in a warning; the rest are counted (all are in group_volumes.tsv)


def _card(bundle: Path) -> dict:
    return json.loads((bundle / "model.json").read_text())  # model.card.CARD_NAME (not imported: torch)


def _bundle_sha(bundle: Path) -> str:
    return (_card(bundle).get("weights") or {}).get("sha256", "")


def collect(
    out_dir: Path, rows: list[dict[str, str]], covariates: Covariates | None, bundles: dict[str, Path]
) -> tuple[dict[str, list[StudyImage]], list[str]]:
    """Per contrast, every image with a preprocessed volume table; the harmonized table counts
    only when the contrast's current bundle made it. Also the problems met, one line per image."""
    layout, shas = OutputLayout(out_dir), {c: _bundle_sha(b) for c, b in bundles.items()}
    studies: dict[str, list[StudyImage]] = defaultdict(list)
    problems = []
    for row in rows:
        record = record_from_relpath(out_dir, row["path"])
        before_table = layout.output(record, "native_preproc_volumes")
        if not before_table.is_file():
            continue
        after_table = layout.output(record, "native_harmonized_volumes")
        try:
            before = read_volume_table(before_table)
            after = read_volume_table(after_table) if after_table.is_file() else None
        except ValueError as err:
            problems.append(f"{row['path']}: {err}")
            continue
        if after is not None:
            bundle = json.loads(sidecar_path(after_table).read_text()).get("ModelBundle") or {}
            if bundle.get("SHA256") != shas.get(record.suffix):
                problems.append(f"{row['path']}: harmonized with another model bundle than the current one; left out")
                after = None
        values = covariates.values(record.subject, record.session) if covariates else {}
        studies[record.suffix].append(StudyImage(row["path"], row["site"], before, after, values))
    return dict(studies), problems


def anchor_covariates(bundle: Path | None) -> tuple[str, ...]:
    """The covariates a bundle's site anchors were fitted at (its card), by their participants.tsv
    names (a categorical column "sex=M" counts as "sex")."""
    if bundle is None:
        return ()
    training = _card(bundle).get("training") or {}
    columns = (training.get("anchor_covariates") or {}).get("columns", [])
    return tuple(dict.fromkeys(column.split("=")[0] for column in columns))


def volume_rows(studies: dict[str, list[StudyImage]], names: list[str]) -> tuple[list[dict[str, str]], list[str]]:
    """group_volumes.tsv: one row per image, its site, covariates and both sets of volumes."""
    columns = ["path", "contrast", "site", *names]
    columns += [f"{state}_{t}_ml" for state in ("preproc", "harmonized") for t in TISSUES]
    rows = []
    for contrast, images in sorted(studies.items()):
        for image in images:
            row = {"path": image.relpath, "contrast": contrast, "site": image.site}
            row.update({n: "n/a" if image.covariates.get(n) is None else str(image.covariates[n]) for n in names})
            for state, volumes in (("preproc", image.before), ("harmonized", image.after)):
                row.update({f"{state}_{t}_ml": f"{volumes[t]:.3f}" if volumes else "n/a" for t in TISSUES})
            rows.append(row)
    return rows, columns


def stats_rows(contrast: str, result: Diagnostics) -> list[dict[str, str]]:
    """The numbers of one contrast's section, for group_volume_stats.tsv."""

    def number(value: float) -> str:
        return f"{value:.6g}"

    rows = [
        {
            "contrast": contrast,
            "term": c.covariate,
            "statistic": f"site association: {c.test} p",
            "before": number(c.p_value),
            "flag": "confounded" if c.flagged else "",
        }
        for c in result.confounds
    ]
    for volume in result.volumes:
        common = {"contrast": contrast, "tissue": volume.tissue, "term": "site"}
        for statistic, attribute in (
            ("partial eta-squared", "partial_eta_squared"),
            ("F", "f_statistic"),
            ("F-test p", "p_value"),
        ):
            before, after = getattr(volume.site_before, attribute), getattr(volume.site_after, attribute)
            rows.append({**common, "statistic": statistic, "before": number(before), "after": number(after)})
        for term, (before, after, pooled) in volume.effects.items():
            rows.append(
                {
                    **common,
                    "term": term,
                    "statistic": "coefficient, with site",
                    "before": number(before.estimate),
                    "before_low": number(before.low),
                    "before_high": number(before.high),
                    "after": number(after.estimate),
                    "after_low": number(after.low),
                    "after_high": number(after.high),
                    "flag": "moved outside its interval" if volume.moved(term) else "",
                }
            )
            rows.append(
                {
                    **common,
                    "term": term,
                    "statistic": "coefficient, pooled (no site term)",
                    "after": number(pooled.estimate),
                    "after_low": number(pooled.low),
                    "after_high": number(pooled.high),
                    "flag": "outside the site-adjusted interval" if volume.pooling_differs(term) else "",
                }
            )
    return rows


def confound_warning(covariate: str, test: str, statistic: float, p_value: float, adjusted: bool = False) -> str:
    model = (
        f"This bundle's site anchors were fitted at the study's mean {covariate} (docs/model.md), which keeps the "
        f"{covariate} difference out of the site curves on average, though not out of what the network learns."
        if adjusted
        else f"This bundle's site anchors were not adjusted for {covariate}."
    )
    return (
        f"Site and {covariate} are associated ({test} = {statistic:.2f}, p = {p_value:.3g}): the sites differ in "
        f"{covariate}, so part of what differs between sites is biology, not scanner. Any harmonization that makes "
        f"the sites alike without knowing {covariate} (an image-level model learns each site's appearance from "
        f"images alone) can remove part of the {covariate} effect with the site effect, or leave scanner "
        f"differences that look like {covariate}; the two cannot be told apart in these data. {model} What to do: keep "
        f"{covariate} (and site) in every model of the harmonized volumes, read the after-estimates below against "
        f"their before-intervals, check on traveling subjects or on sites that overlap in {covariate}, and report "
        "the confound with the results."
    )


def _interval(effect) -> str:
    return f"{effect.estimate:.3g} [{effect.low:.3g}, {effect.high:.3g}]"


def contrast_section(
    contrast: str, result: Diagnostics, kinds: dict[str, str], adjusted_for: tuple[str, ...] = ()
) -> str:
    """The section of one contrast; ``adjusted_for``: the covariates its bundle's anchors were fitted at."""
    parts = [f"<h3>{html.esc(contrast)}</h3>"]
    if result.missing:
        listed = "; ".join(f"{path} ({', '.join(names)})" for path, names in result.missing[:LISTED])
        more = f" and {len(result.missing) - LISTED} more" if len(result.missing) > LISTED else ""
        parts.append(
            html.box("warn", f"{len(result.missing)} image(s) left out for a missing covariate: {listed}{more}.")
        )
    if result.not_harmonized:
        parts.append(
            html.paragraph(
                f"{len(result.not_harmonized)} image(s) without a harmonized volume table (not harmonized "
                "with the current bundle) are left out.",
                "note",
            )
        )
    if result.note:
        return "".join(parts) + html.box("note", result.note)
    described = ", ".join(f"{n} ({kinds[n]})" for n in kinds) or "none"
    parts.append(
        html.paragraph(
            f"{len(result.used)} image(s), {len({i.site for i in result.used})} site(s); covariates: {described}. "
            "Site effect: partial eta-squared and F-test of site in volume ~ covariates + site (lower after is "
            "better). Covariate effects in the same model before and after, each with its 95 % interval, "
            "flagged when harmonization moves the estimate outside its before-interval; and after, pooled "
            "(no site term, as harmonized data are analysed), marked where it leaves the site-adjusted "
            "after-interval (a pooled analysis would answer differently).",
            "note",
        )
    )
    parts += [
        html.box("warn", confound_warning(c.covariate, c.test, c.statistic, c.p_value, c.covariate in adjusted_for))
        for c in result.confounds
        if c.flagged
    ]
    site_rows = [
        {
            "volume": v.tissue,
            "partial eta-squared before": f"{v.site_before.partial_eta_squared:.3f}",
            "after": f"{v.site_after.partial_eta_squared:.3f}",
            "F-test p before": f"{v.site_before.p_value:.3g}",
            "p after": f"{v.site_after.p_value:.3g}",
        }
        for v in result.volumes
    ]
    parts.append(html.table(site_rows, list(site_rows[0]), numeric=list(site_rows[0])[1:]))
    effect_rows = [
        {
            "volume": v.tissue,
            "covariate": term,
            "before (with site)": _interval(before),
            "after (with site)": _interval(after),
            "flag": "moved outside its interval" if v.moved(term) else "",
            "after, pooled": _interval(pooled),
            "pooled vs with site": "differs" if v.pooling_differs(term) else "",
        }
        for v in result.volumes
        for term, (before, after, pooled) in v.effects.items()
    ]
    if effect_rows:
        parts.append(html.table(effect_rows, list(effect_rows[0])))
    by_site: dict[str, dict[str, tuple[list[float], list[float]]]] = defaultdict(lambda: {t: ([], []) for t in TISSUES})
    for image in result.used:
        for tissue in TISSUES:
            by_site[image.site][tissue][0].append(image.before[tissue])
            by_site[image.site][tissue][1].append(image.after[tissue])  # type: ignore[index]
    figure = group_figures.volume_distributions(dict(by_site), TISSUES, f"{contrast}: tissue volumes per site")
    parts.append(
        html.figure(figure, "Per-site volumes, before (grey) | after (colour) harmonization; dots are images.")
    )
    return "".join(parts)


def downstream_section(
    out_dir: Path, rows: list[dict[str, str]], covariates: Covariates | None, bundles: dict[str, Path]
) -> str:
    """The section's HTML; writes group_volumes.tsv and group_volume_stats.tsv beside the report."""
    studies, problems = collect(out_dir, rows, covariates, bundles)
    if not studies:
        return html.box("note", "No *_volumes.tsv in OUT yet: participant runs measure them (unless --no-volumes).")
    names = covariates.names if covariates else []
    kinds = {n: covariates.kinds[n] for n in names} if covariates else {}
    layout = OutputLayout(out_dir)
    derivatives.write_tsv(layout.group_volumes, *volume_rows(studies, names))
    parts, numbers = [html.boxes("warn", problems[:LISTED])], []
    for contrast, images in sorted(studies.items()):
        result = diagnose(images, names, kinds)
        numbers += stats_rows(contrast, result)
        parts.append(contrast_section(contrast, result, kinds, anchor_covariates(bundles.get(contrast))))
    if numbers:
        derivatives.write_tsv(layout.group_volume_stats, numbers, STATS_COLUMNS)
    tables = (
        f"Tables beside this report: {layout.group_volumes.name} (every image), "
        f"{layout.group_volume_stats.name} (these numbers)."
    )
    return html.paragraph(tables, "note") + "".join(parts)
