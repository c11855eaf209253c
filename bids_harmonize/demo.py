"""`make demo`: the whole product on a simulated 3-site study, sized for a 2-core CPU.

    python -m bids_harmonize.demo OUT_DIR [--subjects 9] [--iterations N]

1. simulate a BIDS dataset (3 sites, one T1w per subject, ground truth kept);
2. `participant`: preprocess every image (no model yet);
3. `group`: site inventory and MURD training (the recipe `group` picks here: "cpu" without a
   GPU; 2 mm template);
4. `participant` again: harmonize every image to the bundle's default target site;
5. score before/after on the template grid and print one table (image metrics, and the Atropos
   GM/WM volume difference to the target site and the GM age slope: docs/qc.md); save a figure.

Every step runs through the real CLI (`bids_harmonize.cli.run.main`), as a user would.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_harmonize import console
from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.bids.records import ImageRecord
from bids_harmonize.cli.run import main as cli
from bids_harmonize.simulate.dataset import RESCAN_STREAM
from bids_harmonize.sites.overrides import read_tsv

TEMPLATE = "MNI152NLin2009cSym"


@dataclass
class Scan:
    subject: str
    site: str  # inferred label (sites.tsv)
    preproc: Path  # template grid, own site
    harmonized: Path  # template grid, target site


def _run(step: str, argv: list[str]) -> float:
    start = time.perf_counter()
    console.result(f"\n== {step}: bids_harmonize {' '.join(argv)}")
    code = cli(argv)
    if code != 0:
        raise SystemExit(f"demo step '{step}' failed with exit code {code}")
    return time.perf_counter() - start


def _scans(out: Path) -> list[Scan]:
    layout = OutputLayout(out)
    scans = []
    for row in read_tsv(layout.sites_table):
        image = ImageRecord(Path(row["path"]), row["path"], row["participant_id"][4:], None, "T1w")
        scans.append(
            Scan(
                subject=image.subject,
                site=row["site"],
                preproc=layout.output(image, "template_preproc", TEMPLATE, 2),
                harmonized=layout.output(image, "template_harmonized", TEMPLATE, 2),
            )
        )
    return scans


def _load(path: Path) -> np.ndarray:
    return np.asarray(nb.load(path).dataobj, np.float32)


def score(out: Path, dataset, target_site: str) -> list[tuple[str, str, str]]:
    """Rows (metric, before, after)."""
    from bids_harmonize.qc import between_site_wasserstein, similarity, site_classifier_accuracy
    from bids_harmonize.templates import get_template

    scans = _scans(out)
    mask = _load(get_template(TEMPLATE, 2, "mask", "brain")) > 0
    sites = [s.site for s in scans]
    before = [_load(s.preproc) for s in scans]
    after = [_load(s.harmonized) for s in scans]
    masks = [mask] * len(scans)
    accuracy = [site_classifier_accuracy(images, masks, sites) for images in (before, after)]
    distance = [between_site_wasserstein(images, masks, sites) for images in (before, after)]
    target_sim = next(dataset.site_of_subject[s.subject] for s in scans if s.site == target_site)
    # The reference is the subject rescanned at the target site (docs/qc.md): its render there
    # plus the target site's noise, an independent draw.
    ssim = []
    for images in (before, after):
        values = []
        for scan, image in zip(scans, images):
            rescan = dataset.noisy_render(scan.subject, target_sim, "T1w", stream=RESCAN_STREAM)
            truth_mask = _load(dataset.ground_truth.mask_path(scan.subject)) > 0
            values.append(similarity(image, rescan, truth_mask).ssim)
        ssim.append(float(np.mean(values)))
    chance = accuracy[0].chance
    return downstream_rows(scans, before, after, dataset, target_sim) + [
        (
            f"site-classifier accuracy (chance {chance:.2f})",
            f"{accuracy[0].accuracy:.3f}",
            f"{accuracy[1].accuracy:.3f}",
        ),
        ("between-site Wasserstein (brain, normalised)", f"{distance[0]:.4f}", f"{distance[1]:.4f}"),
        (f"SSIM to a rescan at the target site (n={len(scans)})", f"{ssim[0]:.3f}", f"{ssim[1]:.3f}"),
    ]


def downstream_rows(
    scans: list[Scan], before: list, after: list, dataset, target_sim: str
) -> list[tuple[str, str, str]]:
    """What a study analyses (docs/qc.md, "Downstream measures"): Atropos GM/WM volumes of every
    scan not from the target site against the same subject rescanned at the target site (AVDP),
    and the GM age slope over all scans against the slope in their target-site rescans (the
    benchmark's reference; with a handful of subjects, read the interval)."""
    from bids_harmonize.qc.downstream import absolute_volume_difference, slope_ratio
    from bids_harmonize.qc.volumes import tissue_volumes

    ages = {row["participant_id"][4:]: float(row["age"]) for row in read_tsv(dataset.bids_root / "participants.tsv")}
    masks = [_load(dataset.ground_truth.mask_path(scan.subject)) > 0 for scan in scans]
    voxel_ml = dataset.resolution_mm**3 / 1000
    volumes = [
        [tissue_volumes(image, mask, voxel_ml) for image, mask in zip(images, masks)] for images in (before, after)
    ]
    at_target = [
        tissue_volumes(dataset.noisy_render(scan.subject, target_sim, "T1w", stream=RESCAN_STREAM), mask, voxel_ml)
        for scan, mask in zip(scans, masks)
    ]
    away = [i for i, scan in enumerate(scans) if dataset.site_of_subject[scan.subject] != target_sim]
    rows = []
    for tissue in ("GM", "WM"):
        cells = [
            np.mean([absolute_volume_difference(v[i][tissue], at_target[i][tissue]) for i in away]) for v in volumes
        ]
        rows.append(
            (f"{tissue} volume difference to the target site, % (n={len(away)})", f"{cells[0]:.1f}", f"{cells[1]:.1f}")
        )
    age, reference = [ages[scan.subject] for scan in scans], [v["GM"] for v in at_target]
    ratios = [slope_ratio([v_i["GM"] for v_i in v], reference, age) for v in volumes]
    rows.append(
        (
            f"GM age-slope ratio to the target site's (1 = kept; n={len(scans)})",
            *(f"{r.value:.2f} [{r.low:.2f}, {r.high:.2f}]" for r in ratios),
        )
    )
    return rows


def figure(out: Path, png: Path, subject: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scan = next(s for s in _scans(out) if s.subject == subject)
    before, after = _load(scan.preproc), _load(scan.harmonized)
    k = before.shape[2] // 2 + 5
    panels = [
        (before[:, :, k], "before (own site)"),
        (after[:, :, k], "harmonized"),
        (after[:, :, k] - before[:, :, k], "difference"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.6))
    for ax, (data, title) in zip(axes, panels):
        ax.imshow(np.rot90(data), cmap="RdBu_r" if title == "difference" else "gray")
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"sub-{subject}, site {scan.site}, axial slice {k} (template grid)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--subjects", type=int, default=9)
    parser.add_argument("--iterations", type=int, help="training iterations (default: the recipe's)")
    parser.add_argument("--figure", type=Path, help="where to save the before/after figure")
    args = parser.parse_args(argv)
    from bids_harmonize.simulate import simulate_dataset

    start = time.perf_counter()
    root = args.out_dir.resolve()
    console.result(f"== simulate: 3 sites x {args.subjects} subjects (T1w, 2 mm) into {root / 'bids'}")
    dataset = simulate_dataset(
        root / "bids", n_sites=3, n_subjects=args.subjects, resolution_mm=2.0, seed=0, overwrite=True
    )
    bids, out = str(dataset.bids_root), str(root / "derivatives")
    common = ["--template-resolution", "2", "--contrasts", "T1w", "--nprocs", "2", "-w", str(root / "work")]
    timings = {"simulate": time.perf_counter() - start}
    timings["participant (preprocess)"] = _run("participant", [bids, out, "participant", *common])
    training = ["--iterations", str(args.iterations)] if args.iterations else []
    timings["group (train)"] = _run("group", [bids, out, "group", *common, *training])
    timings["participant (harmonize)"] = _run("participant", [bids, out, "participant", *common])
    from bids_harmonize.levels.bundles import default_target
    from bids_harmonize.model.card import read_card

    card = read_card(OutputLayout(out).model("T1w"))
    target = default_target(card)
    rows = score(Path(out), dataset, target)
    png = figure(Path(out), args.figure or Path(out) / "demo_before_after.png", dataset.subjects[0])
    total = time.perf_counter() - start
    width = max(len(r[0]) for r in rows)
    training = card.data["training"]
    console.result(
        f"\nHarmonized to target site {target} ({training['iterations']} iterations, {card.config.preset} preset)\n"
    )
    console.result(f"{'metric'.ljust(width)}  {'before':>8}  {'after':>8}")
    for name, b, a in rows:
        console.result(f"{name.ljust(width)}  {b:>8}  {a:>8}")
    console.result("\nWall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    console.result(f"Outputs: {out} (sites.tsv, models/T1w/, sub-*/anat/); figure: {png}")
    layout = OutputLayout(out)
    console.result(
        f"Reports: {layout.participant_report(dataset.subjects[0])} (one per participant) and {layout.group_report}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
