"""The one entry point the levels call: methods text, participant reports, group report.

It never raises: a report that cannot be written is logged, and the run's own outcome (exit
code, crash files) stands. Each report's build time is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bids_harmonize.bids.covariates import Covariates
from bids_harmonize.reports.citation import MethodsFacts, write_citation
from bids_harmonize.reports.collect import (
    ImageOutputs,
    Template,
    crash_files,
    dataset_mask_checks,
    derivative_files,
)
from bids_harmonize.reports.group import group_report
from bids_harmonize.reports.participant import participant_report

LOGGER = logging.getLogger("bids_harmonize.reports")


def skip_reasons(
    assignments: Iterable[Any], harmonized_contrasts: set[str], not_harmonized: Sequence[str], models_hint: str
) -> dict[str, str]:
    """relpath -> why the run did not harmonize it (images it tried to harmonize are absent)."""
    reasons = {}
    for message in not_harmonized:
        relpath, _, why = message.partition(": ")
        reasons[relpath] = why
    for a in assignments:
        contrast = a.image.suffix
        if a.image.relpath in reasons or contrast in harmonized_contrasts:
            continue
        reasons[a.image.relpath] = (
            f"no {contrast} model bundle was found ({models_hint}). Train one with `bids_harmonize BIDS_DIR "
            "OUT_DIR group`, then run `participant` again."
        )
    return reasons


def _timed(what: str, build: Any) -> Any:
    start = time.perf_counter()
    try:
        result = build()
    except Exception as err:  # reports must never change the run's outcome
        LOGGER.warning("could not write the %s: %s: %s", what, type(err).__name__, err)
        return None
    LOGGER.info("wrote the %s in %.1f s", what, time.perf_counter() - start)
    return result


def write_reports(
    *,
    out_dir: Path,
    template: Template,
    facts: MethodsFacts,
    bundles: dict[str, Path],
    assignments: Sequence[Any] = (),
    reasons: dict[str, str] | None = None,
    since: float | None = None,
    group: bool = True,
    covariates: Covariates | None = None,
) -> list[Path]:
    """CITATION.md/.bib, one report per participant of ``assignments``, and (with ``group``)
    OUT/group.html. Returns the reports written."""
    out_dir = Path(out_dir)
    cited = _timed("methods text (logs/CITATION.md)", lambda: write_citation(out_dir, facts))
    methods = cited[2] if cited else None
    by_subject: dict[str, list[ImageOutputs]] = {}
    for a in assignments:
        item = ImageOutputs(
            record=a.image,
            out_dir=out_dir,
            files=derivative_files(out_dir, a.image, template),
            site={"site": a.site, "provenance": a.provenance, "evidence": a.evidence, "warnings": list(a.warnings)},
            skip_reason=(reasons or {}).get(a.image.relpath),
            crashes=crash_files(out_dir, a.image.relpath, since),
        )
        by_subject.setdefault(a.image.subject, []).append(item)
    try:  # the dataset-relative mask check; without it the reports say "not judged"
        dataset = dataset_mask_checks(out_dir, [a.image for a in assignments], template) if by_subject else []
    except Exception as err:  # reports must never change the run's outcome
        LOGGER.warning("could not read the dataset's mask checks: %s: %s", type(err).__name__, err)
        dataset = []
    written = [
        _timed(
            f"report of sub-{subject}",
            lambda s=subject, i=items: participant_report(out_dir, s, i, template, methods, dataset_checks=dataset),
        )
        for subject, items in sorted(by_subject.items())
    ]
    if group:
        written.append(_timed("group report", lambda: group_report(out_dir, template, bundles, methods, covariates)))
    return [path for path in written if path]
