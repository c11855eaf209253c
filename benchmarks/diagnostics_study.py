"""The group report's downstream diagnostics on a simulated study with an age effect and a site-age
confound, through the real CLI.

    python benchmarks/diagnostics_study.py [--subjects 36] [--keep 8] [--nprocs 2] [--work-dir DIR]
        [--img docs/img]

1. simulate SUBJECTS subjects at 3 sites (round robin, ages 20-80, 2 mm; the simulator's atrophy
   makes GM shrink with age);
2. confound age with site, as consortia do: of the first site keep its KEEP youngest subjects, of
   the third its KEEP oldest, of the second (the largest: the bundle's default target) everyone;
3. `participant` -> `group` -> `participant` with the default covariates (age, sex);
4. read the section's numbers (group_volume_stats.tsv) and compare its GM age slope (with site and
   sex in the model) with two references on the same subjects: the slope of their true GM volume
   (the simulator's tissue maps), and the slope the same segmenter (Atropos) finds when every one
   of them is scanned at the target site (their noisy target-site renders, true brain mask): the
   slope a study without site effects would measure;
5. screenshot the report's volume section (headless Chromium) to IMG/report_group_volumes.png.

Results: benchmarks/results/diagnostics_study.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from report_screenshots import shoot

RESULTS = Path(__file__).parent / "results"
IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
SITES = 3


def confounded_study(dataset, keep: int, root: Path) -> tuple[Path, dict[str, float], dict[str, str]]:
    """A BIDS dataset of symlinks to a confounded subset of the simulated subjects; their ages and sexes."""
    rows = {r["participant_id"][4:]: r for r in _tsv(dataset.bids_root / "participants.tsv")}
    ages = {s: float(rows[s]["age"]) for s in rows}
    first, second, third = (
        sorted((s for s, label in dataset.site_of_subject.items() if label == site.label), key=ages.get)
        for site in dataset.sites
    )
    chosen = sorted(first[:keep] + second + third[-keep:])
    bids = root / "study"
    bids.mkdir(parents=True)
    for item in dataset.bids_root.iterdir():
        if not item.name.startswith("sub-") and item.name != "participants.tsv":
            (bids / item.name).symlink_to(item, target_is_directory=item.is_dir())
    for subject in chosen:
        (bids / f"sub-{subject}").symlink_to(dataset.bids_root / f"sub-{subject}", target_is_directory=True)
    header = list(next(iter(rows.values())))
    lines = ["\t".join(header)] + ["\t".join(rows[s][c] for c in header) for s in chosen]
    (bids / "participants.tsv").write_text("\n".join(lines) + "\n")
    return bids, {s: ages[s] for s in chosen}, {s: rows[s]["sex"] for s in chosen}


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def run_cli(bids: Path, out: Path, work: Path, nprocs: int) -> dict[str, float]:
    from bids_harmonize.cli.run import main as cli

    common = ["--nprocs", str(nprocs), "-w", str(work)]
    timings = {}
    for name, argv in (
        ("participant (preprocess)", ["participant", "--template-resolution", "2"]),
        ("group (train)", ["group"]),
        ("participant (harmonize)", ["participant"]),
    ):
        start = time.perf_counter()
        code = cli([str(bids), str(out), *argv, *common])
        if code != 0:
            raise SystemExit(f"{name} exited {code}")
        timings[name] = time.perf_counter() - start
        print(f"{name}: {timings[name]:.0f} s", flush=True)
    return timings


def age_slope(volumes: dict[str, float], ages: dict[str, float], sexes: dict[str, str]) -> tuple[float, float, float]:
    """OLS slope of volume on age with sex, and its 95 % interval (t quantile)."""
    from scipy import stats

    subjects = sorted(volumes)
    y = np.array([volumes[s] for s in subjects])
    x = np.column_stack(
        [np.ones(len(y)), [ages[s] for s in subjects], [sexes[s] == sexes[subjects[0]] for s in subjects]]
    )
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(y) - x.shape[1]
    sigma2 = float(((y - x @ beta) ** 2).sum()) / dof
    se = float(np.sqrt(sigma2 * np.linalg.inv(x.T @ x)[1, 1]))
    t = float(stats.t.ppf(0.975, dof))
    return float(beta[1]), float(beta[1] - t * se), float(beta[1] + t * se)


def reference_volumes(dataset, subjects: list[str], target: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per subject: true GM volume, and Atropos' GM volume of the subject scanned at the target site."""
    from bids_harmonize.qc.volumes import TISSUES, tissue_volumes, true_volumes
    from bids_harmonize.simulate.dataset import RESCAN_STREAM

    truth, measured = {}, {}
    voxel_ml = dataset.resolution_mm**3 / 1000
    layout = dataset.ground_truth
    for subject in subjects:
        probseg = {t: np.asarray(nb.load(layout.probseg_path(subject, t)).dataobj) for t in TISSUES}
        truth[subject] = true_volumes(probseg, voxel_ml)["GM"]
        mask = np.asarray(nb.load(layout.mask_path(subject)).dataobj) > 0
        render = dataset.noisy_render(subject, target, stream=RESCAN_STREAM)
        measured[subject] = tissue_volumes(render, mask, voxel_ml)["GM"]
    return truth, measured


def section_numbers(out: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["tissue"], r["term"], r["statistic"]): r for r in _tsv(out / "group_volume_stats.tsv")}


def screenshot(out: Path, png: Path) -> None:
    """The group report with every section but the volume one hidden, rendered by Chromium."""
    page = (out / "group.html").read_text()
    only = page.replace("</head>", "<style>section:not(#volumes), nav {display: none}</style></head>", 1)
    copy = out / "group_volumes_only.html"
    copy.write_text(only)
    shoot(copy, png, 1100)
    copy.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=36)
    parser.add_argument("--keep", type=int, default=8)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=None, help="kept afterwards (default: a temp folder)")
    parser.add_argument("--img", type=Path, default=IMG)
    args = parser.parse_args()
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from bids_harmonize.simulate.dataset import simulate_dataset

    root = args.work_dir or Path(tempfile.mkdtemp(prefix="diagnostics-"))
    try:
        dataset = simulate_dataset(root / "simulated", SITES, args.subjects, ("T1w",), 2.0, seed=0, overwrite=True)
        bids, ages, sexes = confounded_study(dataset, args.keep, root)
        timings = run_cli(bids, root / "out", root / "work", args.nprocs)
        numbers = section_numbers(root / "out")
        target_site = dataset.sites[1].label
        truth, at_target = reference_volumes(dataset, sorted(ages), target_site)
        screenshot(root / "out", args.img / "report_group_volumes.png")
        confound = json.dumps(
            {k[1]: v["before"] for k, v in numbers.items() if k[2].startswith("site association")}, indent=None
        )
        markdown = report(args, dataset, ages, numbers, truth, at_target, sexes, timings, confound)
    finally:
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    (RESULTS / "diagnostics_study.md").write_text(markdown)
    print(markdown)
    return 0


def report(args, dataset, ages, numbers, truth, at_target, sexes, timings, confound) -> str:
    true_slope = age_slope(truth, ages, sexes)
    target_slope = age_slope(at_target, ages, sexes)
    lines = [
        "# Downstream diagnostics on a simulated, confounded study\n",
        f"Command: `python benchmarks/diagnostics_study.py --subjects {args.subjects} --keep {args.keep} "
        f"--nprocs {args.nprocs}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU; load average at the end "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}  ",
        f"Study: {len(ages)} subjects of {args.subjects} simulated, 3 sites "
        f"({', '.join(s.label for s in dataset.sites)}); the first site keeps its {args.keep} youngest, "
        f"the third its {args.keep} oldest; site-age association in the report: p = {confound}  ",
        "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + "\n",
        "## Site effect (partial eta-squared of site in `volume ~ age + sex + site`)\n",
        "| tissue | before | after | F-test p before | F-test p after |",
        "|---|---|---|---|---|",
    ]
    for tissue in ("CSF", "GM", "WM"):
        eta, p = numbers[(tissue, "site", "partial eta-squared")], numbers[(tissue, "site", "F-test p")]
        lines.append(f"| {tissue} | {eta['before']} | {eta['after']} | {p['before']} | {p['after']} |")
    row = numbers[("GM", "age", "coefficient, with site")]
    lines += [
        "\n## GM age slope (ml/year, 95 % interval)\n",
        "| estimate | slope | interval |",
        "|---|---|---|",
        f"| report, before harmonization | {float(row['before']):.3f} | "
        f"[{float(row['before_low']):.3f}, {float(row['before_high']):.3f}] |",
        f"| report, after harmonization | {float(row['after']):.3f} | "
        f"[{float(row['after_low']):.3f}, {float(row['after_high']):.3f}] |",
        f"| same subjects, all scanned at the target site (Atropos) | {target_slope[0]:.3f} | "
        f"[{target_slope[1]:.3f}, {target_slope[2]:.3f}] |",
        f"| same subjects, true GM volume (simulator) | {true_slope[0]:.3f} | "
        f"[{true_slope[1]:.3f}, {true_slope[2]:.3f}] |",
    ]
    inside = {
        state: float(row[f"{state}_low"]) <= target_slope[0] <= float(row[f"{state}_high"])
        for state in ("before", "after")
    }
    lines.append(
        "\nThe target-site slope lies inside the report's interval: "
        f"before {'yes' if inside['before'] else 'no'}, after {'yes' if inside['after'] else 'no'}. "
        f"Flag on the age term: '{row['flag'] or 'none'}'."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
