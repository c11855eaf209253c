"""Registration QC on real heads: fixed bounds against the dataset-relative flag (issue 18).

    python benchmarks/registration_qc.py [--csv benchmarks/results/brain_mask.csv]

Runs no registration: the per-head QC numbers of the 27 real heads (24 IXI Hammersmith of
../shared/data/ixi_hh, the 3 realmix scanners) were measured by benchmarks/brain_mask.py with the
pipeline's own functions and are in benchmarks/results/brain_mask.csv: the mask check (Dice of
the learned mask with the template mask carried back, outline distance p95), the same with the
registration broken by 10 mm / 10 degrees, and the old Spearman template agreement. This script
applies the flags to those numbers:
- fixed bounds: the mask check's (Dice < 0.90 or distance > 7.5 mm, preproc/brainmask.py) and the
  old Spearman flag (< 0.5, qc/metrics.py POOR_AGREEMENT);
- dataset-relative: robust z-score (median/MAD) of each number over the dataset, flagged beyond
  3.5 on the bad side (qc/metrics.py dataset_outlier, mask_check_outliers), for the whole set of
  27, for IXI alone (one site, 24) and for realmix alone (3 images: too few, not judged).
False alarms: flags among the right heads (all 27 masks were checked by eye, brain_mask.md).
Detection: each head's broken registration put in place of its right one, the other 26 right;
is the broken head flagged? Writes benchmarks/results/registration_qc.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bids_harmonize.preproc.brainmask import MAX_OUTLINE_MM, MIN_MASK_DICE  # noqa: E402
from bids_harmonize.qc import metrics  # noqa: E402
from harness import machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def checks(rows: list[dict[str, str]], broken: bool = False) -> list[dict[str, float]]:
    prefix = "broken_" if broken else ""
    return [
        {
            "TemplateMaskDice": float(r[f"{prefix}qc_dice"]),
            "BoundaryDistance95mm": float(r["broken_boundary_mm" if broken else "qc_boundary_mm"]),
        }
        for r in rows
    ]


def fixed_flag(check: dict[str, float]) -> bool:
    return not (check["TemplateMaskDice"] >= MIN_MASK_DICE and check["BoundaryDistance95mm"] <= MAX_OUTLINE_MM)


def relative_flag(check: dict[str, float], dataset: list[dict[str, float]]) -> bool | None:
    outliers = metrics.mask_check_outliers(check, dataset)
    return any(o.flagged for o in outliers.values()) if outliers else None


def spearman_relative(values: list[float]) -> list[bool | None]:
    result = []
    for value in values:
        outlier = metrics.dataset_outlier(value, values, bad="low")
        result.append(None if outlier is None else outlier.flagged)
    return result


def summary(values: list[float]) -> str:
    q = np.percentile(values, [0, 5, 25, 50, 75, 95, 100])
    return " / ".join(f"{v:.3f}" for v in q)


def count(flags: list[bool | None]) -> str:
    judged = [f for f in flags if f is not None]
    if not judged:
        return f"not judged (fewer than {metrics.MIN_DATASET_IMAGES} images)"
    return f"{sum(judged)} of {len(judged)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=HERE / "results" / "brain_mask.csv")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "registration_qc.md")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = read(args.csv)
    subsets = {
        "all 27 (ixi_hh + realmix)": rows,
        "ixi_hh (one site)": [r for r in rows if r["dataset"] == "ixi_hh"],
        "realmix (3 scanners)": [r for r in rows if r["dataset"] == "realmix"],
    }
    lines = [
        "# Registration QC on real heads: fixed bounds vs the dataset-relative flag",
        "",
        f"Command: `python benchmarks/registration_qc.py` (numbers from {args.csv.name}, measured by "
        "benchmarks/brain_mask.py; no registration rerun)  ",
        f"Machine: {machine()}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}  ",
        f"Dataset-relative flag: robust z = (x - median) / (1.4826 MAD) over the dataset, beyond "
        f"{metrics.ROBUST_Z_LIMIT} on the bad side (Dice low, outline distance high), judged from "
        f"{metrics.MIN_DATASET_IMAGES} images; scale floors "
        + ", ".join(f"{name} {floor}" for name, _, floor in metrics.MASK_CHECK_NUMBERS.values())
        + f". Fixed bounds: Dice < {MIN_MASK_DICE} or distance > {MAX_OUTLINE_MM} mm; old Spearman < "
        f"{metrics.POOR_AGREEMENT}.",
        "",
        "## Distribution over the right heads (min / 5th / 25th / median / 75th / 95th / max)",
        "",
        "| heads | n | mask check Dice | outline distance p95 (mm) | Spearman template agreement (old) |",
        "|---|---|---|---|---|",
    ]
    for name, subset in subsets.items():
        lines.append(
            f"| {name} | {len(subset)} | {summary([float(r['qc_dice']) for r in subset])} | "
            f"{summary([float(r['qc_boundary_mm']) for r in subset])} | "
            f"{summary([float(r['spearman_old']) for r in subset])} |"
        )
    lines += [
        "",
        "## False alarms (right heads flagged) and detection (broken registration flagged)",
        "",
        "| heads | mask check, fixed bounds | mask check, dataset-relative | either | "
        "Spearman, fixed (< 0.5) | Spearman, dataset-relative | broken detected, fixed | "
        "broken detected, dataset-relative |",
        "|---|---|---|---|---|---|---|---|",
    ]
    details = []
    for name, subset in subsets.items():
        right, broken = checks(subset), checks(subset, broken=True)
        fixed = [fixed_flag(c) for c in right]
        relative = [relative_flag(c, right) for c in right]
        either = [f or bool(r) for f, r in zip(fixed, relative)]
        spearman = [float(r["spearman_old"]) for r in subset]
        spearman_fixed = [v < metrics.POOR_AGREEMENT for v in spearman]
        spearman_rel = spearman_relative(spearman)
        detected_fixed = [fixed_flag(c) for c in broken]
        detected_rel = [relative_flag(b, [b, *right[:i], *right[i + 1 :]]) for i, b in enumerate(broken)]
        lines.append(
            f"| {name} | {count(fixed)} | {count(relative)} | {count(either)} | {count(spearman_fixed)} | "
            f"{count(spearman_rel)} | {count(detected_fixed)} | {count(detected_rel)} |"
        )
        if name.startswith("all"):
            for r, c, rel, sp in zip(subset, right, relative, spearman_rel):
                z = metrics.mask_check_outliers(c, right)
                spz = float(metrics.robust_z(float(r["spearman_old"]), spearman))
                details.append(
                    f"| {r['dataset']} | {r['subject']} | {c['TemplateMaskDice']:.3f} | "
                    f"{z['TemplateMaskDice'].z:+.2f} | {c['BoundaryDistance95mm']:.2f} | "
                    f"{z['BoundaryDistance95mm'].z:+.2f} | {'flag' if rel else ''} | {float(r['spearman_old']):.3f} | "
                    f"{spz:+.2f} | {'flag' if sp else ''} |"
                )
            broken_z = [
                metrics.mask_check_outliers(b, [b, *right[:i], *right[i + 1 :]])["TemplateMaskDice"].z
                for i, b in enumerate(broken)
            ]
    right = checks(rows)
    bounds = []
    for key, (label, bad, floor) in metrics.MASK_CHECK_NUMBERS.items():
        values = np.array([c[key] for c in right])
        median = float(np.median(values))
        scale = max(metrics.MAD_TO_SD * float(np.median(np.abs(values - median))), floor)
        sign = -1 if bad == "low" else 1
        bounds.append(f"{label} {'<' if sign < 0 else '>'} {median + sign * metrics.ROBUST_Z_LIMIT * scale:.3f}")
    lines += [
        "",
        "On the 27 heads as one dataset the dataset-relative flag amounts to " + " or ".join(bounds) + f" (fixed: "
        f"Dice < {MIN_MASK_DICE}, distance > {MAX_OUTLINE_MM} mm): tighter than the fixed bounds on this data.",
        "",
        f"Broken registrations, Dice robust z against the 26 right heads and themselves: min "
        f"{min(broken_z):+.1f}, median {np.median(broken_z):+.1f}, max {max(broken_z):+.1f}.",
        "",
        "## Per head (all 27 as one dataset)",
        "",
        "| dataset | subject | Dice | z | distance (mm) | z | relative flag | Spearman | z | Spearman relative flag |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *details,
        "",
        f"Took {time.perf_counter() - start:.2f} s.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
