"""Command line: bids_harmonize-simulate OUT [--sites N] [--subjects M] [--contrasts ...] ..."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bids_harmonize import console
from bids_harmonize.errors import ExitCode
from bids_harmonize.simulate.dataset import CONTRASTS, simulate_dataset
from bids_harmonize.simulate.figure import plot_site_renders


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit code of the BIDS Apps draft, not argparse's 2
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bids_harmonize-simulate",
        description="Simulate a multi-site structural MRI dataset (BIDS) with ground truth.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT", help="output folder (must be empty or absent)")
    parser.add_argument("--sites", type=int, default=3, metavar="N", help="number of sites (default 3)")
    parser.add_argument("--subjects", type=int, default=8, metavar="M", help="number of subjects (default 8)")
    parser.add_argument("--contrasts", nargs="+", choices=CONTRASTS, default=["T1w"], help="default T1w")
    parser.add_argument("--resolution", type=float, default=2.0, metavar="MM", help="simulation grid in mm (default 2)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier simulation in OUT")
    parser.add_argument("--figure", type=Path, metavar="PNG", help="also draw the first subject at every site")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        dataset = simulate_dataset(
            args.out_dir,
            n_sites=args.sites,
            n_subjects=args.subjects,
            contrasts=tuple(args.contrasts),
            resolution_mm=args.resolution,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as error:
        console.error(f"bids_harmonize-simulate: error: {error}")
        return int(ExitCode.USAGE)
    console.result(
        f"Simulated {len(dataset.subjects)} subjects at {len(dataset.sites)} sites "
        f"({', '.join(dataset.contrasts)}, {dataset.resolution_mm:g} mm) "
        f"in {time.perf_counter() - start:.1f} s\n"
        f"  BIDS dataset: {dataset.bids_root}\n  ground truth: {dataset.ground_truth_root}"
    )
    if args.figure:
        console.result(f"  figure: {plot_site_renders(dataset, args.figure)}")
    return 0
