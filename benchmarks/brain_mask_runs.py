"""The participant level before and after the learned mask, and deepbet on simulated phantoms.

    python benchmarks/brain_mask_runs.py participant [--data ../shared/data] [--ixi 4] [--nprocs 2]
    python benchmarks/brain_mask_runs.py phantoms [--subjects 6]

`participant`: runs `bids_harmonize BIDS OUT participant` (the real CLI, 2 mm template) on the
realmix scans and the first N IXI heads, once with `--brain-mask template` (before) and once with
the default learned mask (after), and reports the wall time of each run and the mask check of
each image. `phantoms`: deepbet's mask of each simulated T1w and T2w scan against the simulator's
true brain mask on the native grid (Dice). Results go to benchmarks/results/brain_mask_participant.md
and brain_mask_phantoms.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb

RESULTS = Path(__file__).parent / "results"


def _subset(data: Path, ixi: int, root: Path) -> Path:
    """One BIDS dataset of symlinks: the realmix scans and the first ``ixi`` IXI heads."""
    bids = root / "bids"
    bids.mkdir(parents=True)
    shutil.copy(data / "realmix" / "dataset_description.json", bids)
    for sub in sorted((data / "realmix").glob("sub-*")):
        (bids / sub.name).symlink_to(sub, target_is_directory=True)
    for sub in sorted((data / "ixi_hh").glob("sub-*"))[:ixi]:
        (bids / sub.name).symlink_to(sub, target_is_directory=True)
    return bids


def participant(args: argparse.Namespace) -> str:
    from bids_harmonize.cli.run import main as cli

    rows, times = [], {}
    with tempfile.TemporaryDirectory() as temporary:
        bids = _subset(args.data, args.ixi, Path(temporary))
        n = len(list(bids.glob("sub-*")))
        for mode in ("template", "deepbet"):
            out = Path(temporary) / f"out-{mode}"
            argv = [
                str(bids),
                str(out),
                "participant",
                "--template-resolution",
                "2",
                "--nprocs",
                str(args.nprocs),
                "--contrasts",
                "T1w",
                "--skip-bids-validation",
                "--brain-mask",
                mode,
            ]
            start = time.perf_counter()
            code = cli(argv)
            times[mode] = (time.perf_counter() - start, code, os.getloadavg()[0])
            for sidecar in sorted(out.rglob("*_desc-brain_mask.json")):
                check = json.loads(sidecar.read_text()).get("MaskCheck")
                if check:
                    rows.append(
                        f"| {sidecar.name.split('_desc')[0]} | {check['TemplateMaskDice']:.3f} | "
                        f"{check['BoundaryDistance95mm']:.1f} | {check['BrainVolumeML']:.0f} | "
                        f"{'**flagged**' if check['Flagged'] else 'ok'} |"
                    )
    lines = [
        f"## participant level, {n} real heads (realmix + {args.ixi} IXI), 2 mm template, --nprocs {args.nprocs}\n",
        "| --brain-mask | wall time | per head | exit code | 1-min load at the end |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {mode} | {s:.0f} s | {s / n:.0f} s | {code} | {load:.1f} |" for mode, (s, code, load) in times.items()
    ]
    lines += [
        "",
        "Mask check of each image (default run):",
        "",
        "| image | Dice | outline distance p95 (mm) | brain ml | flag |",
        "|---|---|---|---|---|",
        *rows,
    ]
    return "\n".join(lines) + "\n"


def phantoms(args: argparse.Namespace) -> str:
    from bids_harmonize.preproc import brainmask
    from bids_harmonize.preproc.operations import conform
    from bids_harmonize.simulate import simulate_dataset

    rows, dices = [], []
    with tempfile.TemporaryDirectory() as temporary:
        dataset = simulate_dataset(Path(temporary) / "bids", 3, args.subjects, ("T1w", "T2w"), 2.0, 0)
        for subject in dataset.subjects:
            site = dataset.site_of_subject[subject]
            for contrast in ("T1w", "T2w"):
                image = conform(nb.load(dataset.native_image(subject, contrast)))
                start = time.perf_counter()
                mask = brainmask.learned_mask(image, "cpu", args.threads)
                seconds = time.perf_counter() - start
                truth = conform(dataset.native_truth(subject, site, contrast)[1])
                dice = brainmask.dice(mask.dataobj, truth.dataobj)
                dices.append((contrast, dice))
                rows.append(
                    f"| {subject} | {site} | {contrast} | {'x'.join(map(str, image.shape))} | {dice:.3f} | "
                    f"{seconds:.1f} |"
                )
    summary = "; ".join(
        f"{c}: Dice {min(d for k, d in dices if k == c):.3f}-{max(d for k, d in dices if k == c):.3f}"
        for c in ("T1w", "T2w")
    )
    return (
        f"## deepbet on simulated phantoms ({args.subjects} subjects, 3 sites, 2 mm, seed 0)\n\n"
        f"Against the simulator's true brain mask on each scan's native grid: {summary}.\n\n"
        "| subject | site | contrast | grid | Dice | deepbet s |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("participant", "phantoms"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--ixi", type=int, default=4)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    text = participant(args) if args.what == "participant" else phantoms(args)
    command = "python benchmarks/brain_mask_runs.py " + " ".join(argv or sys.argv[1:])
    section = f"Command: `{command}`; CPU only, {os.cpu_count()} CPUs shared with other jobs.\n\n{text}"
    (RESULTS / f"brain_mask_{args.what}.md").write_text(f"# Brain mask: {args.what}\n\n{section}")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
