"""What a between-site CoV below histogram matching's costs: MURD's voxel-wise map moved step by
step towards histogram matching, with the volume difference and the age effect at every step.

    python benchmarks/downstream_tradeoff.py --work-dir /work/bench/ds [--seed 0]

Issue 16 asks for a between-site CoV (per traveling subject, over its scans at the 4 sites) below
every image-level baseline's. Histogram matching has the lowest: it gives every image one
histogram, the target site's, so a subject's scans agree with each other, and also with every
other subject's. Each image's output quantiles here are

    (1 - alpha) * (its own brain quantiles moved by the site difference)   MURD's map (alpha 0)
    +     alpha * (the target site's pooled brain quantiles)                one histogram (alpha 1)

a monotone map of the image for every alpha (MURD's lookup, model.anchors.image_lookup, without
the network's residual, which moves volumes by under 0.05 points: docs/model.md). Every study and
traveling image is mapped and segmented (Atropos, as the benchmark does) at each alpha, and scored
with the benchmark's measures (benchmarks/downstream_report.py): GM/WM AVDP, GM/WM CoV, WM site
eta2 and the GM age-slope ratio, each with its bootstrap interval over subjects. The oracle's row
(each scan matched to the same subject's target-site histogram: no method knows that) is the CoV
a per-image map reaches while every subject keeps its own volumes.

Uses the consortium, the seed's bundle (it decides which sites are denoised) and the cached
`none` and rescan measurements that benchmarks/downstream.py left in --work-dir.
Results: benchmarks/results/downstream_tradeoff.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.model.anchors import QUANTILE_LEVELS, image_lookup
from bids_harmonize.model.curves import apply_lookup
from bids_harmonize.qc.baselines import adjusted_site_anchors
from bids_harmonize.qc.volumes import tissue_volumes

sys.path.insert(0, str(Path(__file__).parent))
import downstream as ds  # noqa: E402
from downstream_limits import ModelInputs, benchmark_inputs  # noqa: E402

from downstream_report import by_subject_and_site, estimate_cell, measures, traveling_only, volume_table  # noqa: E402
from harness import RESULTS, machine  # noqa: E402

ALPHAS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
CACHED = ("none", "rescan_study", "oracle")  # what downstream.py measured (WORK/measured/NAME.json)
SHOWN = {  # measure -> header
    "avdp_GM": "GM AVDP %",
    "avdp_WM": "WM AVDP %",
    "cov_GM": "GM CoV %",
    "cov_WM": "WM CoV %",
    "eta_WM": "WM site eta2",
    "slope_GM": "GM age-slope ratio",
}


def blended_lookup(values: NDArray, brain_mask: NDArray, moved_by: NDArray, pooled: NDArray, alpha: float):
    """The lookup table of one image (model range): its own brain quantiles to
    (1 - alpha) * (own + moved_by) + alpha * pooled (MURD's image_lookup, moved by that much)."""
    own = np.quantile(np.asarray(values, np.float64)[brain_mask], QUANTILE_LEVELS.numpy())
    return image_lookup(values, brain_mask, 0.0, (1 - alpha) * moved_by + alpha * (pooled - own))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the MURD seed whose bundle decides the denoising")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cached = {name: json.loads((args.work_dir / "measured" / f"{name}.json").read_text()) for name in CACHED}
    n_sites, k = len(ds.SITES), ds.SITES.index(ds.TARGET)

    reference = by_subject_and_site(cached["none"]["traveling"], n_sites)[:, k, :]
    at_target = volume_table(cached["rescan_study"]["study"])[:, 1]
    _, cohort, setup, noisy = benchmark_inputs(args.work_dir, args.seed)
    model = ModelInputs(setup.brain_mask, noisy)
    study_values = [model.values(im) for im in cohort.study]
    travel_values = [model.values(im) for im in cohort.traveling]
    covariates = ds.anchor_covariates(cohort, args.work_dir / "consortium")
    study_quantiles = np.stack([model.quantiles_of(x) for x in study_values])
    anchors = adjusted_site_anchors(study_quantiles, [im.site for im in cohort.study], covariates)
    target_values = [x[setup.brain_mask] for x, im in zip(study_values, cohort.study) if im.site == ds.TARGET]
    pooled = np.quantile(np.concatenate(target_values).astype(np.float64), QUANTILE_LEVELS.numpy())

    def volumes(images: list[ds.Image], inputs: list[NDArray], alpha: float) -> list[dict[str, float]]:
        rows = []
        for image, x in zip(images, inputs, strict=True):
            moved_by = anchors[ds.TARGET] - anchors[image.site]
            mapped = apply_lookup(x, *blended_lookup(x, setup.brain_mask, moved_by, pooled, alpha))
            rows.append(tissue_volumes(setup.target_scale.to_scanner(mapped), image.mask, cohort.voxel_ml))
        return rows

    rows = {}
    for alpha in args.alphas:
        study = volume_table(volumes(cohort.study, study_values, alpha))
        traveling = by_subject_and_site(volumes(cohort.traveling, travel_values, alpha), n_sites)
        rows[f"alpha {alpha:g}"] = measures(study, traveling, reference, cohort, k, {}, at_target)
        print(f"alpha {alpha:g}: done ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    oracle_row = traveling_only(by_subject_and_site(cached["oracle"]["traveling"], n_sites), reference, k)
    rows[f"{ds.ORACLE} (AVDP and CoV only)"] = {key: oracle_row.get(key) for key in SHOWN}
    text = report(rows, noisy, time.perf_counter() - started, args)
    (RESULTS / "downstream_tradeoff.md").write_text(text)
    print(text)
    return 0


def report(rows: dict, noisy: set[str], seconds: float, args: argparse.Namespace) -> str:
    lines = [
        "# Between-site CoV against the age effect: MURD's map moved towards one histogram",
        "",
        f"Command: `python benchmarks/downstream_tradeoff.py --work-dir {args.work_dir} --seed {args.seed} "
        f"--alphas {' '.join(f'{a:g}' for a in args.alphas)}`  ",
        f"Machine: {machine()}; {seconds / 60:.1f} min.  ",
        f"Denoised sites (seed {args.seed}'s bundle): {', '.join(sorted(noisy)) or 'none'}. alpha 0: MURD's "
        "voxel-wise map (lookup only, no network); alpha 1: every image mapped to the target site's pooled "
        "brain quantiles. Cells: value [bootstrap 95 % interval over subjects].",
        "",
        "| map | " + " | ".join(SHOWN.values()) + " |",
        "|---" * (len(SHOWN) + 1) + "|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(estimate_cell(row.get(key)) for key in SHOWN) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
