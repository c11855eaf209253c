"""participant -> group -> participant on real heads: ../shared/data/ixi_hh + realmix as one study.

    python benchmarks/realdata_roundtrip.py [--data ../shared/data] [--ixi 24] [--nprocs 2]
        [--work-dir DIR] [--out benchmarks/results/realdata_roundtrip.md]

The real CLI, 2 mm template, as a user would run it on a study of 4 scanners: the 24 IXI heads
(one Philips 3 T site) and the three realmix scans (one scanner each). Checks, each printed with
its numbers:

- every step exits 0;
- every IXI head's brain mask is plausible: its volume is within an adult range (900-2,000 ml);
- the IXI site harmonized to itself (the bundle's default target: the largest site) keeps its
  tissue volumes: |harmonized - preprocessed| / preprocessed below 1 % for CSF, GM and WM, as a
  mean over the IXI heads (the per-head maximum is printed too).

The IXI copies are 2 mm 8-bit resamplings (see their README): the check is of the pipeline on real
anatomy, not of fine intensity detail. Results: benchmarks/results/realdata_roundtrip.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BRAIN_ML = (900.0, 2000.0)  # adult brain-mask volume; IXI's deepbet masks measured 1,339-1,573 ml
SELF_CHANGE_PERCENT = 1.0
TISSUES = ("CSF", "GM", "WM")
TIMINGS = "timings.json"  # in the work folder: each step's wall time and exit code


def real_heads_dataset(data: Path, ixi: int, root: Path) -> Path:
    """One BIDS dataset of symlinks: the first ``ixi`` IXI heads and the realmix scans."""
    bids = root / "bids"
    bids.mkdir(parents=True)
    description = json.loads((data / "ixi_hh" / "dataset_description.json").read_text())
    description["Name"] = f"ixi_hh ({ixi} heads) + realmix"
    (bids / "dataset_description.json").write_text(json.dumps(description, indent=2))
    subjects = sorted((data / "ixi_hh").glob("sub-*"))[:ixi] + sorted((data / "realmix").glob("sub-*"))
    for subject in subjects:
        (bids / subject.name).symlink_to(subject, target_is_directory=True)
    (bids / "participants.tsv").write_text("participant_id\n" + "".join(f"{s.name}\n" for s in subjects))
    return bids


def run_steps(bids: Path, out: Path, work: Path, nprocs: int) -> dict[str, tuple[float, int]]:
    """The three CLI steps; each one's wall time and exit code."""
    from bids_harmonize.cli.run import main as cli

    common = ["--nprocs", str(nprocs), "-w", str(work), "--skip-bids-validation"]
    steps = {
        "participant (preprocess, volumes)": ["participant", "--template-resolution", "2"],
        "group (sites, train)": ["group"],
        "participant (harmonize, volumes)": ["participant"],
    }
    timings = {}
    for name, argv in steps.items():
        start = time.perf_counter()
        code = cli([str(bids), str(out), *argv, *common])
        timings[name] = (time.perf_counter() - start, code)
        print(f"{name}: exit {code} in {timings[name][0]:.0f} s", flush=True)
        if code != 0:
            break
    return timings


def mask_volumes(out: Path, prefix: str) -> dict[str, float]:
    """Brain-mask volume (ml) of every native mask whose subject starts with ``prefix``."""
    volumes = {}
    for path in sorted(out.glob(f"sub-{prefix}*/anat/*_desc-brain_mask.nii.gz")):
        image = nb.load(path)
        voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
        volumes[path.name.split("_")[0]] = float((np.asarray(image.dataobj) > 0).sum()) * voxel_ml
    return volumes


def self_changes(out: Path, prefix: str) -> dict[str, dict[str, float]]:
    """Per subject: the % change of each tissue volume from the preprocessed to the harmonized image."""
    from bids_harmonize.qc.volumes import read_volume_table

    changes = {}
    for before_path in sorted(out.glob(f"sub-{prefix}*/anat/*_desc-preproc_volumes.tsv")):
        after_path = before_path.with_name(before_path.name.replace("desc-preproc", "desc-harmonized"))
        if not after_path.is_file():
            continue
        before, after = read_volume_table(before_path), read_volume_table(after_path)
        changes[before_path.name.split("_")[0]] = {t: 100.0 * (after[t] - before[t]) / before[t] for t in TISSUES}
    return changes


def node_times(log: Path) -> dict[str, float]:
    """Seconds of node time by kind (the node name without its image), from a Nipype log."""
    totals: dict[str, float] = {}
    for name, seconds in re.findall(r'\[Node\] Finished "([^"]+)", elapsed time ([0-9.]+)s', log.read_text()):
        kind = re.sub(r"_sub_.*", "", name)
        totals[kind] = totals.get(kind, 0.0) + float(seconds)
    return totals


def volume_share_lines(out: Path) -> list[str]:
    """Per CLI step that ran nodes: node time of the volume measures against all node time."""
    lines = ["\n## Cost of the per-image tissue volumes (node time, from the Nipype logs)\n"]
    lines += [
        "| run log | all nodes | volume nodes | added to the other nodes | slowest kinds |",
        "|---|---|---|---|---|",
    ]
    for log in sorted((out / "logs").glob("nipype-*.log")):
        times = node_times(log)
        total = sum(times.values())
        if not total:
            continue
        volumes = sum(v for k, v in times.items() if k.startswith("volumes_"))
        top = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:4])
        lines.append(
            f"| {log.name} | {total:.0f} s | {volumes:.0f} s | +{100 * volumes / (total - volumes):.0f} % | {top} |"
        )
    return lines


def report(args, timings, masks, changes, target: str, load: list[float] | None, out: Path) -> tuple[str, bool]:
    n_images = args.ixi + 3
    lines = [
        "# Real heads: participant -> group -> participant (ixi_hh + realmix)\n",
        f"Command: `python benchmarks/realdata_roundtrip.py --ixi {args.ixi} --nprocs {args.nprocs}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU, Python {platform.python_version()}; "
        + (f"load average at the end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}  " if load else "load not recorded  "),
        f"Study: {n_images} real T1w images, 4 scanners; target site (the bundle's default): `{target}`\n",
        "| step | exit code | wall time | per image |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {code} | {seconds:.0f} s | {seconds / n_images:.1f} s |"
        for name, (seconds, code) in timings.items()
    ]
    ok_steps = len(timings) == 3 and all(code == 0 for _, code in timings.values())
    low, high = BRAIN_ML
    implausible = {s: v for s, v in masks.items() if not low <= v <= high}
    values = np.array(list(masks.values())) if masks else np.array([np.nan])
    lines += [
        f"\n## IXI brain masks ({len(masks)} heads)\n",
        f"Volume (ml) min / median / max: {values.min():.0f} / {np.median(values):.0f} / {values.max():.0f}; "
        f"outside {low:.0f}-{high:.0f} ml: {len(implausible)} {sorted(implausible) or ''}",
    ]
    ok_masks = len(masks) == args.ixi and not implausible
    lines += [f"\n## The IXI site harmonized to itself ({len(changes)} heads)\n"]
    lines += ["| tissue | mean abs. change % | max abs. change % | mean signed % |", "|---|---|---|---|"]
    ok_self = len(changes) == args.ixi
    for tissue in TISSUES:
        values = np.array([c[tissue] for c in changes.values()]) if changes else np.array([np.nan])
        mean_abs = float(np.abs(values).mean())
        ok_self = ok_self and mean_abs < SELF_CHANGE_PERCENT
        lines.append(f"| {tissue} | {mean_abs:.2f} | {np.abs(values).max():.2f} | {values.mean():+.2f} |")
    lines += volume_share_lines(out)
    verdicts = {"all steps exit 0": ok_steps, "IXI masks plausible": ok_masks, "IXI to itself < 1 %": ok_self}
    lines += ["\n## Checks\n"] + [f"- {name}: {'**met**' if ok else '**missed**'}" for name, ok in verdicts.items()]
    return "\n".join(lines) + "\n", all(verdicts.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--ixi", type=int, default=24)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=None, help="kept afterwards (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "realdata_roundtrip.md")
    parser.add_argument("--report-only", action="store_true", help="report on the outputs of an earlier --work-dir run")
    args = parser.parse_args()
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    if args.report_only and args.work_dir is None:
        parser.error("--report-only needs the --work-dir of the earlier run")
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="roundtrip-"))
    try:
        out = root / "out"
        if args.report_only:  # the steps ran before, into --work-dir: report what they left
            recorded = json.loads((root / TIMINGS).read_text())
        else:
            steps = run_steps(real_heads_dataset(args.data, args.ixi, root), out, root / "work", args.nprocs)
            recorded = {"steps": steps, "load": os.getloadavg()}
            (root / TIMINGS).write_text(json.dumps(recorded))
        timings = {name: tuple(value) for name, value in recorded["steps"].items()}
        sidecars = sorted(out.glob("sub-*/anat/*_desc-harmonized_T1w.json"))
        target = json.loads(sidecars[0].read_text()).get("TargetSite", "?") if sidecars else "none"
        markdown, ok = report(
            args, timings, mask_volumes(out, "IXI"), self_changes(out, "IXI"), target, recorded.get("load"), out
        )
    finally:
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(markdown)
    print(markdown)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
