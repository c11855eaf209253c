"""Site inventory at scale: cold and warm `group --sites-only` on a generated 10,000-image dataset.

    python benchmarks/site_inventory.py [--images 10000] [--keep DIR]

Generates a BIDS tree (sidecars with 20 scanners over 3 vendors, tiny 2x2x2 NIfTI images,
dataset-level sidecars inherited by every image), then runs the real CLI twice in fresh
processes: cold (empty work dir, pybids indexes everything) and warm (cached index). Prints
wall time and peak resident memory of each run (from wait4) and writes a Markdown table to
benchmarks/results/site_inventory.md. Target on a 2-core machine: cold < 60 s, warm >= 5x faster.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np

VENDORS = [
    ("SIEMENS", "Prisma_fit", 3.0),
    ("GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0),
    ("Philips Medical Systems", "Ingenia", 1.5),
]
RESULTS = Path(__file__).parent / "results" / "site_inventory.md"


def tiny_nifti_bytes(voxel: float) -> bytes:
    img = nb.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.diag([voxel, voxel, voxel, 1.0]))
    raw = io.BytesIO()
    holder = nb.FileHolder(fileobj=raw)
    img.to_file_map({"image": holder, "header": holder})
    return gzip.compress(raw.getvalue())


def generate(root: Path, n_images: int) -> None:
    """n_images/4 subjects x 2 sessions x (T1w, T2w); scanner k = subject % 20."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "scale", "BIDSVersion": "1.9.0"}))
    (root / "T1w.json").write_text(
        json.dumps({"RepetitionTime": 2.3, "EchoTime": 0.003, "InversionTime": 0.9, "FlipAngle": 9})
    )
    (root / "T2w.json").write_text(json.dumps({"RepetitionTime": 3.2, "EchoTime": 0.56, "FlipAngle": 120}))
    images = {v: tiny_nifti_bytes(v) for v in (1.0, 1.2)}
    for subject in range(n_images // 4):
        unit = subject % 20
        vendor, model, field = VENDORS[unit % 3]
        sidecar = json.dumps(
            {
                "Manufacturer": vendor,
                "ManufacturersModelName": model,
                "MagneticFieldStrength": field,
                "DeviceSerialNumber": f"SN{unit:04d}",
                "StationName": f"ST{unit:04d}",
            }
        )
        for session in ("1", "2"):
            folder = root / f"sub-{subject:05d}" / f"ses-{session}" / "anat"
            folder.mkdir(parents=True)
            for suffix in ("T1w", "T2w"):
                stem = folder / f"sub-{subject:05d}_ses-{session}_{suffix}"
                stem.with_suffix(".nii.gz").write_bytes(images[1.0 if unit % 2 else 1.2])
                stem.with_suffix(".json").write_text(sidecar)


def timed_run(command: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit code) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        sys.stderr.write(proc.stderr.read().decode()[-3000:])
    return seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--keep", type=Path, help="generate into DIR and keep it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="site_inventory_"))
    root = args.keep or tmp / "bids"
    try:
        start = time.perf_counter()
        if not root.exists():
            generate(root, args.images)
        print(f"generated {args.images} images in {time.perf_counter() - start:.1f} s at {root}")
        command = [sys.executable, "-m", "bids_harmonize.cli.run", str(root), str(tmp / "out"), "group", "--sites-only"]
        cold = timed_run(command)
        warm = timed_run(command)
        rows = [("cold (index built)", *cold), ("warm (cached index)", *warm)]
        table = ["| run | wall time (s) | peak RSS (MiB) | exit |", "|---|---:|---:|---:|"]
        table += [f"| {name} | {s:.1f} | {rss:.0f} | {code} |" for name, s, rss, code in rows]
        report = "\n".join(
            [
                f"# Site inventory benchmark: {args.images} images",
                "",
                f"Machine: {machine()}",
                "",
                f"Command: `python benchmarks/site_inventory.py --images {args.images}`",
                "",
                *table,
                "",
                f"Warm speed-up: {cold[0] / warm[0]:.1f}x (target >= 5x); cold target < 60 s.",
            ]
        )
        print(report)
        if args.images == 10000:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(report + "\n")
        return 0 if cold[2] == warm[2] == 0 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
