"""The group report's downstream section at consortium scale: 2,000 images' volume tables.

    python benchmarks/group_aggregation.py [--images 200 2000] [--sites 10] [--out-dir DIR]

Writes what the participant level would have written for N images (a preprocessed and a harmonized
``*_volumes.tsv`` with its JSON sidecar per image, participants.tsv with age and sex), on a
synthetic study with a site offset and an age effect, then times the group level's aggregation:
``reports.downstream.downstream_section`` (read every table and sidecar, join the covariates, fit
the diagnostics per tissue, draw the per-site figure, write group_volumes.tsv and
group_volume_stats.tsv). Nothing is segmented: the group level only aggregates.

Target (issue 18): under a minute for 2,000 images. Results: benchmarks/results/group_aggregation.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bids_harmonize.bids import derivatives
from bids_harmonize.bids.covariates import read_covariates
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.qc.volumes import volume_rows
from bids_harmonize.reports.collect import record_from_relpath
from bids_harmonize.reports.downstream import downstream_section

RESULTS = Path(__file__).parent / "results"
TARGET_SECONDS = 60.0


def write_study(root: Path, n_images: int, n_sites: int, seed: int = 0) -> tuple[Path, list[dict[str, str]], Path]:
    """N images' volume tables under root/out, participants.tsv under root/bids, a bundle card."""
    rng = np.random.default_rng(seed)
    out, bids = root / "out", root / "bids"
    bundle = out / "models" / "T1w"
    bundle.mkdir(parents=True)
    bids.mkdir()
    derivatives.write_json(bundle / "model.json", {"weights": {"sha256": "bench"}})
    layout, rows, participants = OutputLayout(out), [], ["participant_id\tage\tsex"]
    for k in range(n_images):
        site = k % n_sites
        age = float(np.clip(rng.normal(35 + 3 * site, 10), 18, 90))  # older sites: a site-age confound
        sex = "M" if rng.random() < 0.5 else "F"
        gm = 760 - 2.5 * age + (25 if sex == "M" else 0) + rng.normal(0, 12)
        before = {"CSF": 300 + 3 * age + rng.normal(0, 15), "GM": gm + 8 * site, "WM": 520 + rng.normal(0, 15)}
        after = {**before, "GM": gm}
        subject = f"{k:05d}"
        relpath = f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"
        rows.append({"path": relpath, "site": f"site{site:02d}", "contrast": "T1w"})
        participants.append(f"sub-{subject}\t{age:.1f}\t{sex}")
        record = record_from_relpath(out, relpath)
        for name, volumes in (("native_preproc_volumes", before), ("native_harmonized_volumes", after)):
            table = layout.output(record, name)
            table.parent.mkdir(parents=True, exist_ok=True)
            derivatives.write_tsv(table, volume_rows(volumes), ("tissue", "volume_ml"))
            derivatives.write_json(table.with_suffix(".json"), {"ModelBundle": {"SHA256": "bench"}})
    (bids / "participants.tsv").write_text("\n".join(participants) + "\n")
    return out, rows, bids


def time_aggregation(n_images: int, n_sites: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as temporary:
        start = time.perf_counter()
        out, rows, bids = write_study(Path(temporary), n_images, n_sites)
        written = time.perf_counter() - start
        os.sync()
        start = time.perf_counter()
        html = downstream_section(out, rows, read_covariates(bids), {"T1w": out / "models" / "T1w"})
        seconds = time.perf_counter() - start
        assert "<img" in html and OutputLayout(out).group_volume_stats.is_file(), "the section was not built"
    return {"images": n_images, "write_s": written, "aggregate_s": seconds, "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = [time_aggregation(n, args.sites) for n in args.images]
    lines = [
        "# Group aggregation of the per-image volume tables\n",
        f"Command: `python benchmarks/group_aggregation.py --images {' '.join(map(str, args.images))} "
        f"--sites {args.sites}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        "| images | writing the synthetic tables | aggregation (read, diagnose, figure, TSVs) | per image | "
        "1-min load |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['images']} | {r['write_s']:.1f} s | {r['aggregate_s']:.1f} s | "
        f"{1000 * r['aggregate_s'] / r['images']:.1f} ms | {r['load']:.2f} |"
        for r in results
    ]
    largest = max(results, key=lambda r: r["images"])
    verdict = (
        "not judged (fewer than 2,000 images)"
        if largest["images"] < 2000
        else ("met" if largest["aggregate_s"] < TARGET_SECONDS else "missed")
    )
    lines.append(
        f"\nTarget: under {TARGET_SECONDS:.0f} s at 2,000 images. At {largest['images']} images: "
        f"{largest['aggregate_s']:.1f} s, **{verdict}**. The tables sit in the page "
        "cache right after writing (a first read from a cold network file system would be slower)."
    )
    markdown = "\n".join(lines) + "\n"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "group_aggregation.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
