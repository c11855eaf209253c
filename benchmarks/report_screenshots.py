"""Regenerate the report screenshots in docs/img/ with headless Chromium (Debian `chromium`).

    python benchmarks/report_screenshots.py DEMO_OUT [--realmix-out REALMIX_OUT] [--img docs/img]

DEMO_OUT is the `derivatives` folder of `python -m bids_harmonize.demo DIR` (DIR/derivatives);
REALMIX_OUT, optional, the output of `bids_harmonize ../shared/data/realmix OUT participant
--template-resolution 2`, whose sub-decub01 report shows the registration warning. Each report
is rebuilt from the outputs first (so the screenshots show the current report code), timed,
then rendered at 1280 px wide. Rerun after the model improves: the reports show whatever the
pipeline produced.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.reports.collect import (
    ImageOutputs,
    dataset_mask_checks,
    derivative_files,
    read_sites_table,
    record_from_relpath,
)
from bids_harmonize.reports.group import group_report
from bids_harmonize.reports.participant import participant_report
from bids_harmonize.templates import get_template
from bids_harmonize.workflows.participant import TemplateFiles

TEMPLATE = "MNI152NLin2009cSym"


def template(resolution: int = 2) -> TemplateFiles:
    return TemplateFiles(
        TEMPLATE,
        resolution,
        {c: str(get_template(TEMPLATE, resolution, c)) for c in ("T1w", "T2w")},
        str(get_template(TEMPLATE, resolution, "mask", "brain")),
    )


def items_of(out: Path, subject: str) -> list[ImageOutputs]:
    rows = [r for r in read_sites_table(out) if r["participant_id"] == f"sub-{subject}"]
    if not rows:  # a participant-only run writes no sites.tsv: take what OUT holds
        rows = [
            {
                "path": p.relative_to(out).as_posix().replace("_desc-preproc", ""),
                "site": "n/a",
                "provenance": "n/a",
                "evidence": "n/a",
            }
            for p in sorted((out / f"sub-{subject}").rglob(f"sub-{subject}*_desc-preproc_T*w.nii.gz"))
            if "space-" not in p.name
        ]
    items = []
    for row in rows:
        record: ImageRecord = record_from_relpath(out, row["path"])
        site = {k: row[k] for k in ("site", "provenance", "evidence")}
        item = ImageOutputs(record, out, derivative_files(out, record, template()), site)
        sidecar = item.sidecar("native_preproc")
        if site["site"] == "n/a" and sidecar:
            item.site = {
                "site": sidecar.get("SourceSite", "n/a"),
                "provenance": sidecar.get("SourceSiteProvenance", "n/a"),
                "evidence": sidecar.get("SourceSiteEvidence", "n/a"),
            }
        items.append(item)
    return items


def timed(label: str, build) -> Path:
    start = time.perf_counter()
    path = build()
    print(f"{label}: built in {time.perf_counter() - start:.1f} s -> {path}")
    return path


def shoot(html: Path, png: Path, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size=1280,{height}",
            html.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    print(f"  screenshot {png}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_out", type=Path)
    parser.add_argument("--subject", default="01")
    parser.add_argument("--realmix-out", type=Path)
    parser.add_argument("--img", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    args = parser.parse_args(argv)
    out, tpl = args.demo_out.resolve(), template()
    methods_file = out / "logs" / "CITATION.md"
    methods = methods_file.read_text() if methods_file.is_file() else None
    items = items_of(out, args.subject)
    dataset = dataset_mask_checks(out, [i.record for i in items], tpl)
    report = timed(
        f"sub-{args.subject}",
        lambda: participant_report(out, args.subject, items, tpl, methods, dataset_checks=dataset),
    )
    shoot(report, args.img / "report_participant.png", 2000)
    bundles = {c: out / "models" / c for c in ("T1w", "T2w") if (out / "models" / c / "model.json").is_file()}
    group = timed("group", lambda: group_report(out, tpl, bundles, methods))
    shoot(group, args.img / "report_group.png", 2000)
    if args.realmix_out:
        real = args.realmix_out.resolve()
        decub_items = items_of(real, "decub01")
        decub_dataset = dataset_mask_checks(real, [i.record for i in decub_items], tpl)
        decub = timed(
            "realmix sub-decub01",
            lambda: participant_report(real, "decub01", decub_items, tpl, dataset_checks=decub_dataset),
        )
        shoot(decub, args.img / "report_realmix_decub01.png", 1100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
