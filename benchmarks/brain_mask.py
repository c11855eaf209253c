"""Brain masks on real heads: the template mask (old) against the learned mask (deepbet, new).

    python benchmarks/brain_mask.py [--data ../shared/data] [--threads 2] [--limit N]

For every T1w head of ../shared/data/ixi_hh and ../shared/data/realmix, runs the pipeline's own
preprocessing functions both ways:
- old (`--brain-mask template`): registration of the whole head to the template; the template
  brain mask carried back is the mask. Its report flag was the Spearman agreement of the
  registered image with the template (< 0.5, qc/metrics.py), recomputed here.
- new (default): deepbet's mask on the native grid; the skull-stripped image registered to the
  skull-stripped template; the mask check (bids_harmonize/preproc/brainmask.py) is the Dice of
  the learned mask and the template mask carried back through that registration.
- a broken registration: the new transform displaced by 10 mm and rotated by 10 degrees; the
  mask check should flag every head.
Writes benchmarks/results/brain_mask.md (+ .csv) and a PNG of each dataset's worst case (old vs
new Dice) with both outlines. Timings are wall-clock on this machine; the load average is in
the header.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from bids_harmonize.preproc import brainmask, operations as op  # noqa: E402
from bids_harmonize.qc.metrics import POOR_AGREEMENT, template_agreement  # noqa: E402
from bids_harmonize.templates import get_template  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TEMPLATE = "MNI152NLin2009cSym"


@dataclass
class HeadResult:
    dataset: str
    subject: str
    shape: str
    dice_old_new: float
    qc_dice: float
    qc_boundary_mm: float
    qc_flagged: bool
    broken_qc_dice: float
    broken_boundary_mm: float
    broken_flagged: bool
    spearman_old: float
    old_flagged: bool
    volume_new_ml: float
    volume_old_ml: float
    seconds_deepbet: float
    seconds_old: float
    seconds_new: float


def broken(transform: sitk.Transform) -> sitk.AffineTransform:
    """A deliberately wrong registration: 10 mm along x and y, 10 degrees about z, on top of ``transform``."""
    wrong = sitk.Euler3DTransform()
    wrong.SetRotation(0.0, 0.0, np.deg2rad(10.0))
    wrong.SetTranslation((10.0, 10.0, 0.0))
    composite = sitk.CompositeTransform([transform, wrong])
    return composite


def run_head(dataset: str, path: Path, template: dict[str, nb.Nifti1Image], threads: int) -> tuple[HeadResult, dict]:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    conformed = op.conform(nb.load(path))
    corrected, _ = op.n4_bias_correct(conformed)
    start = time.perf_counter()
    learned = brainmask.learned_mask(conformed, "cpu", threads)
    seconds_deepbet = time.perf_counter() - start

    start = time.perf_counter()
    old_transform = op.register_affine(corrected, template["T1w"])
    old_mask = op.resample(template["mask"], corrected, op.inverse(old_transform), nearest=True)
    seconds_old = time.perf_counter() - start
    warped_old = op.resample(corrected, template["T1w"], old_transform)
    spearman = template_agreement(
        np.asarray(warped_old.dataobj), np.asarray(template["T1w"].dataobj), np.asarray(template["mask"].dataobj) > 0
    )

    start = time.perf_counter()
    new_transform = op.register_affine(corrected, template["T1w"], moving_mask=learned, fixed_mask=template["mask"])
    carried = op.resample(template["mask"], corrected, op.inverse(new_transform), nearest=True)
    seconds_new = time.perf_counter() - start + seconds_deepbet
    check = brainmask.check_mask(learned, carried)
    wrong = op.resample(template["mask"], corrected, broken(op.inverse(new_transform)), nearest=True)
    wrong_check = brainmask.check_mask(learned, wrong)
    ml = brainmask.voxel_ml(corrected)
    result = HeadResult(
        dataset,
        path.name.split("_")[0],
        "x".join(map(str, conformed.shape)),
        brainmask.dice(np.asarray(old_mask.dataobj), np.asarray(learned.dataobj)),
        check.dice,
        check.boundary_mm,
        check.flagged,
        wrong_check.dice,
        wrong_check.boundary_mm,
        wrong_check.flagged,
        spearman,
        bool(not np.isfinite(spearman) or spearman < POOR_AGREEMENT),
        check.brain_volume_ml,
        float((np.asarray(old_mask.dataobj) > 0).sum()) * ml,
        seconds_deepbet,
        seconds_old,
        seconds_new,
    )
    return result, {"image": corrected, "old": old_mask, "new": learned}


def picture(images: dict, title: str, out: Path) -> None:
    """Three orthogonal cuts through the brain: red = old (template) mask, green = new (deepbet)."""
    data = np.asarray(images["image"].dataobj, np.float32)
    old, new = (np.asarray(images[k].dataobj) > 0 for k in ("old", "new"))
    either = old | new
    centre = [int(np.median(np.nonzero(either)[axis])) for axis in range(3)]
    vmax = float(np.percentile(data[either], 99.5))
    zooms = images["image"].header.get_zooms()[:3]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black")
    for ax, axis in zip(axes, (0, 1, 2)):
        cut = [slice(None)] * 3
        cut[axis] = centre[axis]
        other = [a for a in range(3) if a != axis]
        aspect = zooms[other[1]] / zooms[other[0]]
        ax.imshow(data[tuple(cut)].T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
        for mask, colour in ((old, "#ff3030"), (new, "#30ff30")):
            ax.contour(mask[tuple(cut)].T.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.0)
        ax.axis("off")
    fig.suptitle(
        title + "\nred: template mask (old, --brain-mask template); green: deepbet (new, default)",
        color="white",
        fontsize=10,
    )
    fig.savefig(out, dpi=80, facecolor="black")
    plt.close(fig)


def heads(data: Path, datasets: tuple[str, ...] = ("realmix", "ixi_hh")) -> list[tuple[str, Path]]:
    found = []
    for dataset in datasets:
        found += [(dataset, p) for p in sorted((data / dataset).glob("sub-*/**/anat/*_T1w.nii.gz"))]
    return found


def summary(values: list[float]) -> str:
    a = np.asarray(values)
    return f"min {a.min():.3f}, median {np.median(a):.3f}, max {a.max():.3f}"


def write_report(results: list[HeadResult], command: str, load: str) -> Path:
    rows = "\n".join(
        f"| {r.dataset} | {r.subject} | {r.shape} | {r.dice_old_new:.3f} | "
        f"{r.qc_dice:.3f}{' **flag**' if r.qc_flagged else ''}"
        f" | {r.qc_boundary_mm:.1f} | {r.broken_qc_dice:.3f}{' flag' if r.broken_flagged else ' MISSED'}"
        f" | {r.broken_boundary_mm:.1f} | {r.spearman_old:.2f}"
        f"{' flag' if r.old_flagged else ''} | {r.volume_old_ml:.0f} | {r.volume_new_ml:.0f} | {r.seconds_deepbet:.1f}"
        f" | {r.seconds_old:.1f} | {r.seconds_new:.1f} |"
        for r in results
    )
    n = len(results)
    text = (
        "# Brain masks on real heads: template mask (old) vs deepbet (new)\n\n"
        f"Command: `{command}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, deepbet {brainmask.method_record('deepbet')['Version']} on CPU; load average "
        f"at the end {load}  \nMethod: benchmarks/brain_mask.py (the pipeline's own functions), {TEMPLATE} at the "
        "resolution in the command (default 2 mm).\n\n"
        f"- Dice old vs new mask: {summary([r.dice_old_new for r in results])}\n"
        f"- Mask check (Dice of the learned mask and the template mask carried back by the brain-driven "
        f"registration; flagged below Dice {brainmask.MIN_MASK_DICE} or beyond {brainmask.MAX_OUTLINE_MM} mm "
        f"between the outlines at the 95th percentile): {summary([r.qc_dice for r in results])}; "
        f"flagged {sum(r.qc_flagged for r in results)} of {n}; outline distance (95th percentile, mm) "
        f"{summary([r.qc_boundary_mm for r in results])}\n"
        f"- The same check with the registration deliberately broken (10 mm, 10 degrees): "
        f"{summary([r.broken_qc_dice for r in results])}; flagged {sum(r.broken_flagged for r in results)} of {n}; "
        "outline distance "
        f"{summary([r.broken_boundary_mm for r in results])}\n"
        f"- Old flag (Spearman template agreement < {POOR_AGREEMENT}): {summary([r.spearman_old for r in results])}; "
        f"flagged {sum(r.old_flagged for r in results)} of {n}\n"
        f"- Seconds per head: deepbet {summary([r.seconds_deepbet for r in results])}; old registration + mask "
        f"{summary([r.seconds_old for r in results])}; new (deepbet + brain registration + check) "
        f"{summary([r.seconds_new for r in results])}\n\n"
        "| dataset | subject | grid | Dice old/new | mask check (Dice) | outline distance p95 (mm) | check, broken "
        "registration | broken: distance p95 (mm) | old Spearman | old ml | new ml | deepbet s | old s | new s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n"
    )
    out = RESULTS / "brain_mask.md"
    out.write_text(text)
    with open(RESULTS / "brain_mask.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(results[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="only the first N heads (0: all)")
    parser.add_argument("--datasets", nargs="+", default=["realmix", "ixi_hh"])
    parser.add_argument("--resolution", type=int, choices=(1, 2), default=2, help="template resolution (mm)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite brain_mask.md from brain_mask.csv with the current flag rule (no image work)",
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/brain_mask.py " + " ".join(argv or sys.argv[1:])
    if args.report_only:
        return _report_from_csv(command)
    found = heads(args.data, tuple(args.datasets))[: args.limit or None]
    if not found:
        raise SystemExit(f"no T1w heads under {args.data}/ixi_hh or {args.data}/realmix")
    template = {
        "T1w": nb.load(get_template(TEMPLATE, args.resolution, "T1w")),
        "mask": nb.load(get_template(TEMPLATE, args.resolution, "mask", "brain")),
    }
    results, worst = [], {}
    for dataset, path in found:
        result, images = run_head(dataset, path, template, args.threads)
        print(result, flush=True)
        results.append(result)
        if dataset not in worst or result.dice_old_new < worst[dataset][0].dice_old_new:
            worst[dataset] = (result, images)
    RESULTS.mkdir(exist_ok=True)
    for dataset, (result, images) in worst.items():
        picture(
            images,
            f"{dataset} {result.subject}: worst Dice old vs new = {result.dice_old_new:.3f}; "
            f"mask check {result.qc_dice:.3f}",
            RESULTS / f"brain_mask_worst_{dataset}.png",
        )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(write_report(results, command, load).read_text())
    return 0


def _report_from_csv(command: str) -> int:
    """The table again from the stored numbers, with the flags of the current rule."""
    text = (RESULTS / "brain_mask.md").read_text()
    load = text.split("load average at the end ", 1)[1].split("  ")[0] if "load average at the end " in text else "n/a"
    results = []
    with open(RESULTS / "brain_mask.csv") as handle:
        for row in csv.DictReader(handle):
            values = {
                k: (row[k] if k in ("dataset", "subject", "shape") else float(row[k]))
                for k in row
                if not k.endswith("flagged")
            }
            check = lambda dice, mm: brainmask.MaskCheck(dice, mm, 0.0, 0.0).flagged  # noqa: E731
            results.append(
                HeadResult(
                    **values,
                    qc_flagged=check(values["qc_dice"], values["qc_boundary_mm"]),
                    broken_flagged=check(values["broken_qc_dice"], values["broken_boundary_mm"]),
                    old_flagged=bool(
                        not np.isfinite(values["spearman_old"]) or values["spearman_old"] < POOR_AGREEMENT
                    ),
                )
            )
    print(write_report(results, command.replace(" --report-only", ""), load).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
