"""Downstream benchmark: what harmonization does to the measures a multi-site study analyses.

    python benchmarks/downstream.py [--seeds 0 1 2 3 4] [--work-dir DIR] [--reuse-dataset]
                                    [--murd-recipe cpu] [--murd-iterations N] [--skip-murd]

A simulated consortium (docs/simulator.md) of four sites: a 3 T MPRAGE (the target), a 3 T
IR-FSPGR, a 1.5 T 2D IR-TSE with 4 mm slices (clinical protocol) and a low-SNR 1.5 T MPRAGE.
- Study population: 12 subjects per site, each scanned once (unpaired), ages 20-80 with age
  confounded with site (the target site youngest, the 1.5 T MPRAGE site oldest on average). Every
  image-level method is fitted on these images (MURD trains on them) and harmonizes them.
- Traveling subjects: 8 further subjects scanned at every site, each scan with its own noise;
  held out from every fit.
Images are on the 2 mm template grid with the true brain mask (as after perfect registration and
skull stripping), so the benchmark measures harmonization alone. Every image is segmented by ANTs
Atropos (bids_harmonize.qc.volumes); the measures and their definitions are in docs/qc.md
("Downstream measures"). MURD is trained once per seed at the CLI's thread count.
Results: benchmarks/results/downstream.{md,csv}, downstream_seeds.csv, downstream_volumes.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc import between_site_wasserstein, similarity, site_classifier_accuracy
from bids_harmonize.qc.baselines import Harmonizer, baseline_harmonizers, match_histogram
from bids_harmonize.qc.volumes import TISSUES, tissue_volumes, true_volumes
from bids_harmonize.simulate import SimulatedDataset, simulate_dataset
from bids_harmonize.simulate.dataset import GROUND_TRUTH_DIR, RESCAN_STREAM, SCAN_STREAM
from bids_harmonize.simulate.sites import choose_sites

sys.path.insert(0, str(Path(__file__).parent))
from downstream_report import summarise, write_results  # noqa: E402
from harness import MurdTraining, cli_threads, machine, prepare_murd  # noqa: E402

SITES = ("site1", "site2", "site3", "site4")
TARGET = "site1"
STUDY_PER_SITE, TRAVELING = 12, 8
SEED = 0
TRAVEL_STREAM = 300  # + site index: every traveling scan has its own noise
RESOLUTION_MM = 2.0
ORACLE = "oracle: each scan matched to the same subject at the target site"
# Study subjects per site (rows, SITES order) in each age quartile (columns, youngest first):
# every site spans the whole age range, but site1 leans young and site4 old.
AGE_CONFOUND = ((5, 3, 2, 2), (3, 4, 3, 2), (2, 3, 4, 3), (2, 2, 3, 5))


@dataclass(frozen=True)
class Image:
    subject: str
    site: str
    data: NDArray
    mask: NDArray[np.bool_]


@dataclass(frozen=True)
class Cohort:
    """The benchmark's images and what is true about them."""

    study: list[Image]
    traveling: list[Image]  # subject-major: each traveling subject at every site in SITES order
    rescans: dict[str, NDArray]  # every subject -> an independent scan at the target site
    age: dict[str, float]
    truth: dict[str, dict[str, float]]  # subject -> true tissue volumes (ml)
    voxel_ml: float


def _array(path: Path) -> NDArray:
    return np.asarray(nb.load(path).dataobj)


def assign_study_sites(ages: dict[str, float], seed: int = SEED) -> dict[str, str]:
    """Sites of the study subjects by AGE_CONFOUND: subjects sorted by age into quartiles, each
    quartile's subjects shuffled (seeded) and dealt to the sites in the table's numbers."""
    rng = np.random.default_rng([seed, 42])
    ordered = sorted(ages, key=lambda s: (ages[s], s))
    quarter = len(ordered) // 4
    assignment = {}
    for q in range(4):
        members = list(rng.permutation(ordered[q * quarter : (q + 1) * quarter]))
        for site, counts in zip(SITES, AGE_CONFOUND, strict=True):
            for _ in range(counts[q]):
                assignment[str(members.pop())] = site
    return assignment


def load_cohort(dataset: SimulatedDataset) -> Cohort:
    truth_layout = dataset.ground_truth
    subjects = list(dataset.site_of_subject)
    study_subjects, traveling_subjects = subjects[: 4 * STUDY_PER_SITE], subjects[4 * STUDY_PER_SITE :]
    ages = participants_ages(dataset.bids_root)
    voxel_ml = RESOLUTION_MM**3 / 1000
    truth = {s: true_volumes({t: _array(truth_layout.probseg_path(s, t)) for t in TISSUES}, voxel_ml) for s in subjects}
    masks = {s: _array(truth_layout.mask_path(s)) > 0 for s in subjects}
    study = [
        Image(s, site, dataset.noisy_render(s, site, stream=SCAN_STREAM), masks[s])
        for s, site in sorted(assign_study_sites({s: ages[s] for s in study_subjects}).items())
    ]
    traveling = [
        Image(s, site, dataset.noisy_render(s, site, stream=TRAVEL_STREAM + k), masks[s])
        for s in traveling_subjects
        for k, site in enumerate(SITES)
    ]
    rescans = {s: dataset.noisy_render(s, TARGET, stream=RESCAN_STREAM) for s in subjects}
    return Cohort(study, traveling, rescans, ages, truth, voxel_ml)


def participants_column(bids_root: Path, column: str) -> dict[str, str]:
    lines = (bids_root / "participants.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    return {row["participant_id"].removeprefix("sub-"): row[column] for row in rows}


def participants_ages(bids_root: Path) -> dict[str, float]:
    return {subject: float(age) for subject, age in participants_column(bids_root, "age").items()}


def anchor_covariates(cohort: Cohort, bids_root: Path) -> dict[str, list[float]]:
    """What the group level's default --covariates (age, sex) give the site anchors: one value
    per study image, sex as a 0/1 column (as bids.covariates.Covariates.columns encodes it)."""
    sex = participants_column(bids_root, "sex")
    return {
        "age": [cohort.age[im.subject] for im in cohort.study],
        "sex=M": [float(sex[im.subject] == "M") for im in cohort.study],
    }


def simulated_consortium(out_dir: Path, reuse: bool) -> SimulatedDataset:
    n_subjects = 4 * STUDY_PER_SITE + TRAVELING
    if not reuse:
        return simulate_dataset(out_dir, len(SITES), n_subjects, ("T1w",), RESOLUTION_MM, SEED, overwrite=True)
    found = sorted(p.name for p in out_dir.glob("sub-*"))
    if len(found) != n_subjects:
        raise SystemExit(f"--reuse-dataset: {out_dir} holds {len(found)} subjects, expected {n_subjects}")
    sites = tuple(site.at_resolution(RESOLUTION_MM) for site in choose_sites(len(SITES), SEED))
    site_of_subject = {f"{i + 1:02d}": sites[i % len(SITES)].label for i in range(n_subjects)}
    return SimulatedDataset(out_dir, out_dir / GROUND_TRUTH_DIR, sites, site_of_subject, ("T1w",), RESOLUTION_MM, SEED)


def measure(harmonize: Harmonizer, cohort: Cohort) -> dict:
    """Harmonize every image, segment it, and score the traveling outputs' image metrics."""
    started = time.perf_counter()
    study_out = [harmonize(im.data, im.mask, im.site) for im in cohort.study]
    travel_out = [harmonize(im.data, im.mask, im.site) for im in cohort.traveling]
    seconds = (time.perf_counter() - started) / (len(study_out) + len(travel_out))

    def volumes(outputs: list[NDArray], images: list[Image]) -> list[dict[str, float]]:
        return [tissue_volumes(out, im.mask, cohort.voxel_ml) for out, im in zip(outputs, images, strict=True)]

    similarities = [
        similarity(out, cohort.rescans[im.subject], im.mask) for out, im in zip(travel_out, cohort.traveling)
    ]
    masks, sites = [im.mask for im in cohort.traveling], [im.site for im in cohort.traveling]
    return {
        "study": volumes(study_out, cohort.study),
        "traveling": volumes(travel_out, cohort.traveling),
        "ssim": [s.ssim for s in similarities],  # per traveling scan, subject-major
        "psnr_db": [s.psnr for s in similarities],
        "site_accuracy": site_classifier_accuracy(travel_out, masks, sites).accuracy,
        "wasserstein": between_site_wasserstein(travel_out, masks, sites),
        "seconds_per_image": seconds,
    }


def oracle_volumes(cohort: Cohort) -> list[dict[str, float]]:
    """Every traveling scan histogram-matched (brain voxels) to the same subject's scan at the
    target site, then segmented: the best any per-image intensity map can do, knowing what no
    real method knows (each subject's target-site histogram). Where a site-level curve stops
    short of it, the gap is per-subject contrast, not the curve's shape."""
    n_sites, k = len(SITES), SITES.index(TARGET)
    volumes = []
    for first in range(0, len(cohort.traveling), n_sites):
        scans = cohort.traveling[first : first + n_sites]
        reference = scans[k].data[scans[k].mask]
        for im in scans:
            matched = im.data if im.site == TARGET else match_histogram(im.data, im.mask, reference)
            volumes.append(tissue_volumes(matched, im.mask, cohort.voxel_ml))
    return volumes


def cached(path: Path, compute) -> dict:
    """A method's measurements, reused from `path` when an earlier run wrote them."""
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def run(args: argparse.Namespace, work_dir: Path) -> tuple[dict, dict, Cohort, float, list[int]]:
    """Measurements of every method, MURD's per seed, the cohort, MURD's mean training time and the
    seeds whose measurements an earlier run had cached."""
    dataset = simulated_consortium(work_dir / "consortium", args.reuse_dataset)
    cohort = load_cohort(dataset)
    images, masks = [im.data for im in cohort.study], [im.mask for im in cohort.study]
    sites = [im.site for im in cohort.study]
    cache = work_dir / "measured"
    measured = {}
    covariates = None if args.pooled_anchors else anchor_covariates(cohort, dataset.bids_root)
    for name, harmonize in baseline_harmonizers(images, masks, sites, TARGET, covariates=covariates).items():
        if name != "Nyul (all sites)":
            print(f"measuring {name}", flush=True)
            measured[name] = cached(cache / f"{name}.json", lambda h=harmonize: measure(h, cohort))
    measured["rescan"] = cached(
        cache / "rescan.json",
        lambda: {
            "traveling": [
                tissue_volumes(cohort.rescans[s], mask, cohort.voxel_ml) for s, mask in _traveling_masks(cohort).items()
            ]
        },
    )
    measured[ORACLE] = cached(cache / "oracle.json", lambda: {"traveling": oracle_volumes(cohort)})
    # The age-slope reference: every study subject as the target scanner measures it.
    measured["rescan"].update(
        cached(
            cache / "rescan_study.json",
            lambda: {
                "study": [tissue_volumes(cohort.rescans[im.subject], im.mask, cohort.voxel_ml) for im in cohort.study]
            },
        )
    )
    per_seed, seconds, reused = {}, [], []
    for seed in [] if args.skip_murd else args.seeds:
        overrides = {"validation_per_site": 0} if args.keep_last else {}
        training = MurdTraining(args.murd_recipe, seed, args.murd_iterations, overrides)
        key = f"murd-{training.recipe}-{training.iterations or 'recipe'}-{recipe_digest(training.recipe)}"
        key += f"-{'anchors-age-sex' if covariates else 'anchors-pooled'}{'-last' if args.keep_last else ''}-seed{seed}"

        def compute(training=training, seed=seed) -> dict:
            setup = prepare_murd(images, masks, sites, TARGET, training, covariates)
            harmonize = setup.train(training, murd_dir(work_dir, seed, args.keep_last))
            print(f"  trained seed {seed} in {training.seconds / 60:.1f} min (load {training.load:.1f})", flush=True)
            return {**measure(harmonize, cohort), "training_s": training.seconds, "load": training.load}

        print(f"MURD ({args.murd_recipe}) seed {seed}", flush=True)
        if (cache / f"{key}.json").exists():
            reused.append(seed)
        per_seed[seed] = cached(cache / f"{key}.json", compute)
        seconds.append(per_seed[seed]["training_s"])
    return measured, per_seed, cohort, float(np.mean(seconds)) if seconds else 0.0, reused


def murd_dir(work_dir: Path, seed: int, keep_last: bool) -> Path:
    return work_dir / f"murd-seed{seed}{'-last' if keep_last else ''}"


def kept_steps(work_dir: Path, seeds: list[int], keep_last: bool) -> dict[int, object]:
    """Per seed, the training step whose weights the bundle kept (its card's validation record),
    read from the bundles this work dir holds; "last" when validation was off."""
    steps = {}
    for seed in seeds:
        card = murd_dir(work_dir, seed, keep_last) / "murd" / "model.json"
        if card.exists():
            record = json.loads(card.read_text())["training"].get("validation", {})
            steps[seed] = record.get("selected_step", "last")
    return steps


def recipe_digest(name: str) -> str:
    """A short digest of the recipe's settings and of the model code (noise matching included): a
    cached MURD result is reused only for the recipe and the code it was measured with."""
    import hashlib

    import bids_harmonize.model
    from bids_harmonize.model.recipes import RECIPES

    recipe = RECIPES[name]
    settings = json.dumps({"preset": recipe.preset, **recipe.train_config().to_dict()}, sort_keys=True, default=str)
    package = Path(bids_harmonize.model.__file__).parent.parent
    sources = [*sorted((package / "model").glob("*.py")), package / "preproc" / "noise.py"]  # what inference runs
    code = b"".join(path.read_bytes() for path in sources)
    return hashlib.sha256(settings.encode() + code).hexdigest()[:8]


def _traveling_masks(cohort: Cohort) -> dict[str, NDArray[np.bool_]]:
    return {im.subject: im.mask for im in cohort.traveling}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--work-dir", type=Path, help="keep the dataset and measurements here (default: temporary)")
    parser.add_argument("--reuse-dataset", action="store_true", help="use the dataset already in --work-dir")
    parser.add_argument("--murd-recipe", default="cpu")
    parser.add_argument("--murd-iterations", type=int)
    parser.add_argument("--skip-murd", action="store_true")
    parser.add_argument(
        "--pooled-anchors", action="store_true", help="train without covariates (the site anchors pooled per site)"
    )
    parser.add_argument(
        "--keep-last",
        action="store_true",
        help="train on every study image and keep the last snapshot (no validation-based choice)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(cli_threads())
    command = "python benchmarks/downstream.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work_dir = args.work_dir or Path(temporary)
        measured, per_seed, cohort, training_s, reused = run(args, work_dir)
        kept = kept_steps(work_dir, sorted(per_seed), args.keep_last)
    rows, seed_rows, fidelity = summarise(measured, per_seed, cohort, TARGET, SITES)
    context = {
        "command": command.strip(),
        "seconds": time.perf_counter() - start,
        "training_s": training_s,
        "threads": cli_threads(),
        "recipe": args.murd_recipe,
        "iterations": args.murd_iterations,
        "load": os.getloadavg()[1],
        "seeds": sorted(per_seed),
        "kept_steps": kept,
        "reused_seeds": reused,
        "stem": "downstream_keep_last" if args.keep_last else "downstream",
        "machine": machine(),
    }
    print(write_results(rows, seed_rows, fidelity, measured, per_seed, cohort, context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
