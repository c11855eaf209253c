"""How long the simulator takes.

    python benchmarks/simulate_speed.py [--subjects 8] [--sites 3] [--contrasts T1w] [--resolution 2]

Runs `simulate_dataset` into a temporary folder and prints wall time, CPU time and the size of
what it wrote. The first call in a process also pays for building the template anatomy (and
TemplateFlow's index), reported separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bids_harmonize.simulate import simulate_dataset
from bids_harmonize.simulate.anatomy import load_template_anatomy


def _timed(function, *args, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the phantom simulator.")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--contrasts", nargs="+", default=["T1w"])
    parser.add_argument("--resolution", type=float, default=2.0)
    args = parser.parse_args(argv)

    _, setup_wall, setup_cpu = _timed(load_template_anatomy, args.resolution)
    with tempfile.TemporaryDirectory() as temporary:
        out_dir = Path(temporary) / "phantom"
        _, wall, cpu = _timed(
            simulate_dataset, out_dir, args.sites, args.subjects, tuple(args.contrasts), args.resolution, 0
        )
        files = [p for p in out_dir.rglob("*") if p.is_file()]
        megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"template anatomy ({args.resolution:g} mm): {setup_wall:.1f} s wall, {setup_cpu:.1f} s CPU")
    print(
        f"{args.sites} sites x {args.subjects} subjects x {' '.join(args.contrasts)}, "
        f"{args.resolution:g} mm: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU, {len(files)} files, {megabytes:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
