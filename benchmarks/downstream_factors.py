"""Which of a source site's factors makes its traveling subjects' volume errors under MURD's
voxel-wise map: the site's scans re-rendered by the simulator with one factor taken away.

    python benchmarks/downstream_factors.py --work-dir /work/bench/ds [--site site3] [--seed 0]

Uses the consortium and the seed's bundle that benchmarks/downstream.py left in --work-dir (the
bundle decides which sites are denoised). Variants, each with the benchmark's subjects, anatomy
and noise streams:
- as scanned (the benchmark's images);
- no through-plane blur: the site's voxels at the grid's resolution (same sequence and noise);
- no noise (so nothing to denoise);
- nominal relaxation times: every subject's tissue T1 and T2 at the population values, here and at
  the target site (whose reference scans and study images are re-rendered too).
For each variant, the study images of the changed sites are re-rendered as well, so the anchors
(12 study subjects per site, covariate-adjusted as the group level does) come from the same
physics as the scans they map. Each traveling scan from the site goes through the map (lookup
only, as benchmarks/downstream_limits.py) and is segmented; cells are signed volume differences %
against the same subject at the target site. Results: benchmarks/results/downstream_factors_SITE.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc.baselines import adjusted_site_anchors
from bids_harmonize.qc.volumes import tissue_volumes
from bids_harmonize.simulate.dataset import SCAN_STREAM
from bids_harmonize.simulate.sites import Site
from bids_harmonize.simulate.subjects import Subject

sys.path.insert(0, str(Path(__file__).parent))
import downstream as ds  # noqa: E402
from downstream_limits import ModelInputs, Renderer, benchmark_inputs, target_volumes  # noqa: E402

from harness import RESULTS, machine  # noqa: E402

VARIANTS = ("as scanned", "no through-plane blur", "no noise", "nominal relaxation times")
CONTRAST = "T1w"


def without_blur(site: Site, resolution_mm: float) -> Site:
    """The site with every voxel of its T1w protocol at the grid's resolution: no extra blur."""
    protocol = site.protocols[CONTRAST]
    sharp = dataclasses.replace(protocol, voxel_size_mm=(resolution_mm,) * 3)
    return dataclasses.replace(site, protocols={**site.protocols, CONTRAST: sharp})


def nominal(subject: Subject) -> Subject:
    """The subject with every tissue's T1 and T2 at the population values (its anatomy kept)."""
    return dataclasses.replace(subject, relaxation_scale={name: (1.0, 1.0) for name in subject.relaxation_scale})


class VariantScans:
    """The benchmark's subjects (drawn once, cached) rendered with one factor changed."""

    def __init__(self, dataset) -> None:
        self.render, self.drawn = Renderer(dataset), {}

    def subject(self, label: str) -> Subject:
        if label not in self.drawn:
            self.drawn[label] = self.render.subject(self.render.index(label))
        return self.drawn[label]

    def __call__(self, label: str, site_label: str, stream: int, variant: str) -> NDArray:
        site, subject = self.render.dataset.site(site_label), self.subject(label)
        if variant == "no through-plane blur":
            site = without_blur(site, self.render.dataset.resolution_mm)
        if variant == "nominal relaxation times":
            subject = nominal(subject)
        return self.render.scan(subject, self.render.index(label), site, stream, noise=variant != "no noise")


def changed_sites(variant: str, site: str) -> set[str]:
    if variant == "as scanned":
        return set()
    return {site, ds.TARGET} if variant == "nominal relaxation times" else {site}


def variant_cohort(cohort: ds.Cohort, render: VariantScans, variant: str, site: str) -> tuple[list, list]:
    """The study images and the traveling scans at `site` and the target, re-rendered where the
    variant changes them."""
    changed = changed_sites(variant, site)

    def redo(image: ds.Image, stream: int) -> ds.Image:
        if image.site not in changed:
            return image
        return ds.Image(image.subject, image.site, render(image.subject, image.site, stream, variant), image.mask)

    study = [redo(im, SCAN_STREAM) for im in cohort.study]
    traveling = [
        redo(im, ds.TRAVEL_STREAM + ds.SITES.index(im.site)) for im in cohort.traveling if im.site in (site, ds.TARGET)
    ]
    return study, traveling


def signed_differences(
    quantiles: NDArray, study, traveling, model: ModelInputs, covariates, site: str, voxel_ml: float
) -> dict:
    """subject -> {GM, WM: signed volume difference % of its mapped scan at `site` against its
    scan at the target}; `quantiles` are the study images' (one row each)."""
    anchors = adjusted_site_anchors(quantiles, [im.site for im in study], covariates)
    reference = target_volumes(traveling, voxel_ml)
    result = {}
    for image in (im for im in traveling if im.site == site):
        # Left in the model range: tissue_volumes rescales every image to its own brain percentiles.
        mapped = model.mapped(model.values(image), anchors[site], anchors[ds.TARGET])
        volumes, ref = tissue_volumes(mapped, image.mask, voxel_ml), reference[image.subject]
        result[image.subject] = {t: 100.0 * (volumes[t] - ref[t]) / ref[t] for t in ("GM", "WM")}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--site", default="site3", choices=ds.SITES[1:], help="the source site to take apart")
    parser.add_argument("--seed", type=int, default=0, help="the MURD seed whose bundle decides the denoising")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    dataset, cohort, setup, denoised = benchmark_inputs(args.work_dir, args.seed)
    covariates = ds.anchor_covariates(cohort, args.work_dir / "consortium")
    as_scanned = ModelInputs(setup.brain_mask, denoised)
    scanned = [as_scanned.quantiles(im) for im in cohort.study]
    render, rows = VariantScans(dataset), {}
    for variant in VARIANTS:
        model = ModelInputs(setup.brain_mask, denoised - ({args.site} if variant == "no noise" else set()))
        study, traveling = variant_cohort(cohort, render, variant, args.site)
        changed = changed_sites(variant, args.site)  # the other sites' images are the scanned ones
        quantiles = np.stack([model.quantiles(im) if im.site in changed else q for im, q in zip(study, scanned)])
        rows[variant] = signed_differences(quantiles, study, traveling, model, covariates, args.site, cohort.voxel_ml)
        print(f"{variant}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    scales = {label: render.subject(label).relaxation_scale for label in rows[VARIANTS[0]]}
    text = report(rows, scales, denoised, machine(), time.perf_counter() - started, args)
    (RESULTS / f"downstream_factors_{args.site}.md").write_text(text)
    print(text)
    return 0


def report(rows: dict, scales: dict, denoised: set[str], machine_line: str, seconds: float, args) -> str:
    subjects = list(rows[VARIANTS[0]])
    lines = [
        f"# What makes {args.site}'s volume errors: its scans with one factor taken away",
        "",
        f"Command: `python benchmarks/downstream_factors.py --work-dir {args.work_dir} --site {args.site} "
        f"--seed {args.seed}`  ",
        f"Machine: {machine_line}; {seconds / 60:.1f} min.  ",
        f"Denoised sites (seed {args.seed}'s bundle; not the site in 'no noise'): {', '.join(sorted(denoised))}. "
        f"Cells: signed volume difference % of each traveling subject's scan at {args.site}, mapped (lookup only, "
        f"anchors from that variant's study images), against the same subject at {ds.TARGET}.",
        "",
    ]
    for tissue in ("WM", "GM"):
        lines += [
            f"| {tissue} | " + " | ".join(f"sub-{s}" for s in subjects) + f" | mean abs. {tissue} |",
            "|" + "---|" * (len(subjects) + 2),
        ]
        for variant, per_subject in rows.items():
            cells = [f"{per_subject[s][tissue]:+.1f}" for s in subjects]
            mean = np.mean([abs(per_subject[s][tissue]) for s in subjects])
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean:.2f} |")
        lines.append("")
    lines += [
        "Each subject's T1 scale (GM / WM; 1 = the population's relaxation time, drawn with SD 0.03):",
        "",
        "| " + " | ".join(f"sub-{s}" for s in subjects) + " |",
        "|" + "---|" * len(subjects),
        "| " + " | ".join(f"{scales[s]['GM'][0]:.3f} / {scales[s]['WM'][0]:.3f}" for s in subjects) + " |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
