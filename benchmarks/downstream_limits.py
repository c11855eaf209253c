"""Where MURD's volume error stops on the downstream benchmark, and why: its voxel-wise map
(each image's own brain quantiles moved by the site difference, model.anchors.image_lookup) fed
with site anchors from populations of different sizes and make-ups.

    python benchmarks/downstream_limits.py --work-dir /work/bench/ds [--seed 0] [--draws 5]

Uses the consortium and the seed's bundle that benchmarks/downstream.py left in --work-dir (the
bundle only decides which sites are denoised; the network's residual is left out: on this
benchmark it moves the volumes by under 0.05 points, docs/model.md). Rows, per source site
(GM/WM AVDP % of the traveling subjects):
- anchors from k study subjects per site (k < 12: a random draw, mean over --draws draws),
  covariate-adjusted for age and sex as the group level does: the curve of the anchors'
  sampling error against the study's size;
- anchors from larger studies (--larger, default 24 and 48 subjects per site): the benchmark's
  12 plus new subjects the simulator draws, dealt to the sites by the same age table: where the
  curve goes when the study grows;
- anchors from the traveling subjects themselves, leave-one-out (each subject mapped with the
  other 7 subjects' quantiles at every site): populations matched in anatomy, so no sampling
  difference between sites is left; what remains is the map's own limit;
- for comparison, from benchmarks/results/downstream_volumes.csv: MURD (the whole model, mean of
  its 5 seeds) and the oracle (each scan histogram-matched to the same subject at the target site).
Results: benchmarks/results/downstream_limits.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.model import load_bundle
from bids_harmonize.model.anchors import QUANTILE_LEVELS, image_lookup
from bids_harmonize.model.curves import apply_lookup
from bids_harmonize.preproc.noise import denoise
from bids_harmonize.preproc.operations import robust_scale
from bids_harmonize.qc.baselines import adjusted_site_anchors
from bids_harmonize.qc.downstream import absolute_volume_difference
from bids_harmonize.qc.volumes import tissue_volumes
from bids_harmonize.simulate.anatomy import load_template_anatomy
from bids_harmonize.simulate.dataset import SCAN_STREAM
from bids_harmonize.simulate.render import add_rician_noise, noise_sigma, render_ground_truth
from bids_harmonize.simulate.sites import Site
from bids_harmonize.simulate.subjects import Subject, make_subject

sys.path.insert(0, str(Path(__file__).parent))
import downstream as ds  # noqa: E402

from harness import RESULTS, MurdTraining, machine, prepare_murd  # noqa: E402

Anchors = dict[str, NDArray[np.float64]]
SIZES = (4, 8, 12)
LARGER = (24, 48)  # study subjects per site: the benchmark's 12 and new ones the simulator draws
MURD_SEEDS = (0, 1, 2, 3, 4)  # the seeds downstream.py trains by default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the MURD seed whose bundle decides the denoising (alike for all seeds: it comes from the data)",
    )
    parser.add_argument("--draws", type=int, default=5, help="random draws of k subjects per site, k < 12")
    parser.add_argument(
        "--larger", type=int, nargs="*", default=list(LARGER), help="larger studies: subjects per site, multiples of 12"
    )
    args = parser.parse_args(argv)
    if any(size <= ds.STUDY_PER_SITE or size % ds.STUDY_PER_SITE for size in args.larger):
        parser.error(f"--larger takes multiples of {ds.STUDY_PER_SITE} above {ds.STUDY_PER_SITE}")
    started = time.perf_counter()
    dataset, cohort, setup, noisy = benchmark_inputs(args.work_dir, args.seed)
    study, travel = cohort.study, cohort.traveling
    model = ModelInputs(setup.brain_mask, noisy)
    study_quantiles = np.stack([model.quantiles(im) for im in study])
    travel_inputs = [model.values(im) for im in travel]
    reference = target_volumes(travel, cohort.voxel_ml)

    def score(anchors_for: Callable[[str], Anchors]) -> dict[str, dict[str, float]]:
        return site_avdp(travel, travel_inputs, anchors_for, model, setup.target_scale, reference, cohort.voxel_ml)

    covariates = ds.anchor_covariates(cohort, args.work_dir / "consortium")
    rows = sampling_curve(study_quantiles, [im.site for im in study], covariates, args.draws, score)
    if args.larger:
        more = larger_study(Renderer(dataset), model, max(args.larger) // ds.STUDY_PER_SITE - 1)
        for size in sorted(args.larger):
            kept = (size // ds.STUDY_PER_SITE - 1) * len(ds.SITES) * ds.STUDY_PER_SITE
            quantiles = np.concatenate([study_quantiles, np.array(more.quantiles[:kept])])
            sites = [im.site for im in study] + more.sites[:kept]
            joined = {name: values + more.covariates[name][:kept] for name, values in covariates.items()}
            anchors = adjusted_site_anchors(quantiles, sites, joined)
            rows[f"study anchors, {size} subjects per site (the 12 and {size - 12} drawn anew)"] = score(
                lambda subject, anchors=anchors: anchors
            )
            print(f"{size} subjects per site: done", flush=True)
    travel_quantiles = {(im.subject, im.site): model.quantiles_of(x) for im, x in zip(travel, travel_inputs)}
    rows["traveling subjects' own anchors, leave one out (matched populations)"] = score(
        lambda subject: leave_one_out(travel_quantiles, subject)
    )
    recorded = RESULTS / "downstream_volumes.csv"
    murd = [recorded_avdp(recorded, f"MURD seed {seed}") for seed in MURD_SEEDS]
    rows[f"MURD, mean of seeds {MURD_SEEDS[0]}-{MURD_SEEDS[-1]} (downstream_volumes.csv)"] = mean_rows(murd)
    rows[f"{ds.ORACLE} (downstream_volumes.csv)"] = recorded_avdp(recorded, ds.ORACLE)
    text = report(rows, noisy, machine(), time.perf_counter() - started, args)
    (RESULTS / "downstream_limits.md").write_text(text)
    print(text)
    return 0


def benchmark_inputs(work_dir: Path, seed: int):
    """What downstream.py left in work_dir: the consortium, its cohort, MURD's set-up on the study
    images (population brain mask, target scale) and the sites the seed's bundle denoises."""
    dataset = ds.simulated_consortium(work_dir / "consortium", reuse=True)
    cohort = ds.load_cohort(dataset)
    setup = prepare_murd(
        [im.data for im in cohort.study],
        [im.mask for im in cohort.study],
        [im.site for im in cohort.study],
        ds.TARGET,
        MurdTraining("cpu", seed, None, {}),
    )
    bundle = load_bundle(work_dir / f"murd-seed{seed}" / "murd")
    return dataset, cohort, setup, {site for site in ds.SITES if bundle.denoises(site, ds.TARGET)}


def target_volumes(traveling: list, voxel_ml: float) -> dict[str, dict[str, float]]:
    """subject -> tissue volumes of its traveling scan at the target site (the AVDP reference)."""
    return {im.subject: tissue_volumes(im.data, im.mask, voxel_ml) for im in traveling if im.site == ds.TARGET}


def sampling_curve(
    quantiles: NDArray, sites: list[str], covariates: dict[str, list[float]], draws: int, score
) -> dict[str, dict[str, dict[str, float]]]:
    """Rows of the curve: anchors from k study subjects per site (random draws for k < all)."""
    rng, rows = np.random.default_rng(0), {}
    for k in SIZES:
        runs = 1 if k == ds.STUDY_PER_SITE else draws
        results = []
        for _ in range(runs):
            at_site = ([j for j, s in enumerate(sites) if s == site] for site in ds.SITES)
            chosen = [i for indices in at_site for i in sorted(rng.permutation(indices)[:k])]
            kept = {name: [values[i] for i in chosen] for name, values in covariates.items()}
            anchors = adjusted_site_anchors(quantiles[chosen], [sites[i] for i in chosen], kept)
            results.append(score(lambda subject, anchors=anchors: anchors))
        rows[f"study anchors, {k} subjects per site" + ("" if runs == 1 else f" (mean of {runs} draws)")] = mean_rows(
            results
        )
        print(f"{k} subjects per site: done", flush=True)
    return rows


class Renderer:
    """The simulator's subjects drawn from their seeded streams (index i is the i-th subject, also
    beyond the dataset's) and rendered on the template grid, as SimulatedDataset.noisy_render does."""

    def __init__(self, dataset) -> None:
        self.dataset, self.template = dataset, load_template_anatomy(dataset.resolution_mm)
        self.labels = list(dataset.site_of_subject)

    def index(self, label: str) -> int:
        return self.labels.index(label)

    def subject(self, index: int) -> Subject:
        label = f"{index + 1:0{len(self.labels[0])}d}"
        return make_subject(self.template, label, np.random.default_rng([self.dataset.seed, index]))

    def scan(self, subject: Subject, index: int, site: Site, stream: int, noise: bool = True) -> NDArray:
        image = render_ground_truth(subject, site, "T1w", self.template.grid)
        if not noise:
            return image
        rng = np.random.default_rng([self.dataset.seed, index, stream])
        return add_rician_noise(image, noise_sigma(site), rng, offset=site.intensity_offset)


@dataclass
class DrawnStudy:
    quantiles: list[NDArray[np.float64]]
    sites: list[str]
    covariates: dict[str, list[float]]


def larger_study(render: Renderer, model: ModelInputs, batches: int) -> DrawnStudy:
    """`batches` x 48 new study subjects, drawn after the benchmark's and dealt 12 to each site by
    its age table (downstream.assign_study_sites): their brain quantiles, sites and covariates,
    in the order the batches were drawn."""
    first, size = len(render.labels), len(ds.SITES) * ds.STUDY_PER_SITE
    study = DrawnStudy([], [], {"age": [], "sex=M": []})
    for batch in range(batches):
        drawn = {index: render.subject(index) for index in range(first + batch * size, first + (batch + 1) * size)}
        dealt = ds.assign_study_sites({s.label: float(s.age) for s in drawn.values()}, seed=ds.SEED + 1 + batch)
        for index, subject in drawn.items():  # one batch at a time: about 1 GiB of drawn anatomy
            site = dealt[subject.label]
            data = render.scan(subject, index, render.dataset.site(site), SCAN_STREAM)
            image = ds.Image(subject.label, site, data, subject.brain_mask)
            study.quantiles.append(model.quantiles(image))
            study.sites.append(site)
            study.covariates["age"].append(float(subject.age))
            study.covariates["sex=M"].append(float(subject.sex == "M"))
        print(f"drawn study batch {batch + 1} of {batches}", flush=True)
    return study


def leave_one_out(quantiles: dict[tuple[str, str], NDArray], subject: str) -> Anchors:
    """Each site's mean quantiles over the other traveling subjects' scans there."""
    return {
        site: np.mean([q for (other, at), q in quantiles.items() if at == site and other != subject], axis=0)
        for site in ds.SITES
    }


class ModelInputs:
    """Images in the model range, denoised where the bundle denoises their site, and their
    brain quantiles inside the population's mask (the template mask's role)."""

    def __init__(self, brain_mask: NDArray[np.bool_], noisy: set[str]) -> None:
        self.brain_mask, self.noisy = brain_mask, noisy

    def values(self, image: ds.Image) -> NDArray[np.float32]:
        x = robust_scale(image.data, image.mask).to_model(image.data).astype(np.float32)
        return denoise(x, self.brain_mask) if image.site in self.noisy else x

    def quantiles_of(self, values: NDArray) -> NDArray[np.float64]:
        return np.quantile(values[self.brain_mask].astype(np.float64), QUANTILE_LEVELS.numpy())

    def quantiles(self, image: ds.Image) -> NDArray[np.float64]:
        return self.quantiles_of(self.values(image))

    def mapped(self, values: NDArray, source: NDArray, target: NDArray) -> NDArray:
        """The image (model range) through its own map, moved by the anchors' `target - source`."""
        return apply_lookup(values, *image_lookup(values, self.brain_mask, source, target))


def site_avdp(
    travel, inputs, anchors_for, model: ModelInputs, target_scale, reference, voxel_ml
) -> dict[str, dict[str, float]]:
    """Per source site, the mean GM and WM AVDP % of the traveling subjects' mapped scans."""
    per_site: dict[str, dict[str, list[float]]] = {}
    for image, x in zip(travel, inputs, strict=True):
        if image.site == ds.TARGET:
            continue
        anchors = anchors_for(image.subject)
        mapped = model.mapped(x, anchors[image.site], anchors[ds.TARGET])
        volumes = tissue_volumes(target_scale.to_scanner(mapped), image.mask, voxel_ml)
        for tissue in ("GM", "WM"):
            avdp = absolute_volume_difference(volumes[tissue], reference[image.subject][tissue])
            per_site.setdefault(image.site, {}).setdefault(tissue, []).append(float(avdp))
    return {site: {tissue: float(np.mean(v)) for tissue, v in tissues.items()} for site, tissues in per_site.items()}


def recorded_avdp(path: Path, method: str) -> dict[str, dict[str, float]]:
    """Per source site, the mean GM and WM AVDP % of a method's traveling rows in downstream.py's
    volume table."""
    import csv

    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["method"] == method and r["set"] == "traveling"]
    if not rows:
        raise SystemExit(f"{path} has no traveling rows of {method!r}: run benchmarks/downstream.py first")
    at_target = {r["subject"]: r for r in rows if r["site"] == ds.TARGET}
    result: dict[str, dict[str, float]] = {}
    for site in ds.SITES[1:]:
        scans = [r for r in rows if r["site"] == site]
        result[site] = {
            t: float(
                np.mean(
                    [
                        absolute_volume_difference(float(r[f"{t}_ml"]), float(at_target[r["subject"]][f"{t}_ml"]))
                        for r in scans
                    ]
                )
            )
            for t in ("GM", "WM")
        }
    return result


def mean_rows(results: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {site: {t: float(np.mean([r[site][t] for r in results])) for t in results[0][site]} for site in results[0]}


def report(rows, noisy: set[str], machine_line: str, seconds: float, args: argparse.Namespace) -> str:
    sources = ds.SITES[1:]
    header = "| anchors | " + " | ".join(f"{s} GM | {s} WM" for s in sources) + " | mean GM | mean WM |"
    lines = [
        "# Where the volume error stops: the anchors' population against the map's own limit",
        "",
        "Command: `python benchmarks/downstream_limits.py "
        f"--work-dir {args.work_dir} --seed {args.seed} --draws {args.draws}"
        + (f" --larger {' '.join(map(str, args.larger))}`  " if args.larger else " --larger`  "),
        f"Machine: {machine_line}; {seconds / 60:.1f} min.  ",
        f"Denoised sites (seed {args.seed}'s bundle): {', '.join(sorted(noisy)) or 'none'}. "
        "Cells: mean AVDP % over the 8 traveling subjects' scans from that site "
        "(lookup only: the network's residual is left out).",
        "",
        header,
        "|" + "---|" * (2 * len(sources) + 3),
    ]
    for name, per_site in rows.items():
        cells = [f"{per_site[s][t]:.2f}" for s in sources for t in ("GM", "WM")]
        means = [f"{np.mean([per_site[s][t] for s in sources]):.2f}" for t in ("GM", "WM")]
        lines.append(f"| {name} | " + " | ".join(cells + means) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
