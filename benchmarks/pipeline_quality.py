"""What a user gets: the real CLI on a simulated study, scored on the native grids.

    python benchmarks/quality.py --pipeline [--quick] [--work-dir DIR] [--murd-iterations N]

Runs `participant` (preprocessing), `group` (site inventory and MURD training with the recipe
`group` picks on this machine) and `participant` again (harmonization to the target site), as a
user would, on the same simulated study as the template-grid table (3 sites x 8 subjects, 2 mm,
seed 0). Every subject is scored, transductively: group training sees every image, without
ground truth, as it does for a user.

- Similarity (SSIM, PSNR, MAE; docs/qc.md): each native harmonized image against the subject
  rendered by the target site on the same native grid (Simulator: `native_truth`), plus the
  target site's noise at an independent realisation; "SSIM (noise-free)" against the render alone;
  inside the true brain mask on that grid.
- Baselines: fitted on every native preprocessed (bias-corrected) image with the pipeline's brain
  masks, applied to the same images.
- Site classifier and Wasserstein: on the template-grid outputs (MURD's template-grid harmonized
  images; the baselines applied to the template-grid preprocessed images).
- Self-SSIM: the target site's own images, harmonized, against their preprocessed input.
Anatomy (Dice) is left to the template-grid table: the true labels live on the template grid and
the pipeline's registration is estimated, so a native Dice would mix in registration error.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from numpy.typing import NDArray

from bids_harmonize.bids.outputs import OutputLayout
from bids_harmonize.cli.run import main as cli
from bids_harmonize.qc import between_site_wasserstein, similarity, site_classifier_accuracy
from bids_harmonize.qc.baselines import baseline_harmonizers
from bids_harmonize.simulate import SimulatedDataset, add_rician_noise, noise_sigma
from bids_harmonize.simulate.dataset import RESCAN_STREAM
from harness import CONTRAST, SEED, device_name, format_table, machine, save_results, simulated_phantom

TEMPLATE = "MNI152NLin2009cSym"


@dataclass(frozen=True)
class Subject:
    label: str
    site: str
    preproc: NDArray  # native grid, bias-corrected
    harmonized: NDArray  # native grid, target site
    pipeline_mask: NDArray[np.bool_]  # native grid, the pipeline's brain mask
    template_preproc: NDArray
    template_harmonized: NDArray
    rescan: NDArray  # native grid: target site's render + its noise
    truth: NDArray  # native grid: target site's render
    mask: NDArray[np.bool_]  # native grid: the true brain mask


def _data(path: Path) -> NDArray:
    return np.asarray(nb.load(path).dataobj, dtype=np.float32)


def _derivative(out: Path, subject: str, entities: str) -> Path:
    return out / f"sub-{subject}" / "anat" / f"sub-{subject}_{entities}.nii.gz"


def _run(step: str, argv: list[str]) -> float:
    start = time.perf_counter()
    print(f"== {step}: bids_harmonize {' '.join(argv)}", flush=True)
    if cli(argv) != 0:
        raise SystemExit(f"pipeline step '{step}' failed")
    return time.perf_counter() - start


def run_pipeline(
    dataset: SimulatedDataset, out: Path, work: Path, target: str, iterations: int | None
) -> dict[str, float]:
    common = [
        "--template-resolution",
        "2",
        "--contrasts",
        CONTRAST,
        "--nprocs",
        "2",
        "-w",
        str(work),
        "--seed",
        str(SEED),
    ]
    bids = str(dataset.bids_root)
    train = ["--iterations", str(iterations)] if iterations else []
    return {
        "participant (preprocess)": _run("participant", [bids, str(out), "participant", *common]),
        "group (train)": _run("group", [bids, str(out), "group", *common, *train]),
        "participant (harmonize)": _run("harmonize", [bids, str(out), "participant", *common, "--target-site", target]),
    }


def load_subjects(dataset: SimulatedDataset, out: Path, target_site: str) -> list[Subject]:
    target = dataset.site(target_site)
    subjects = []
    for index, (label, site) in enumerate(dataset.site_of_subject.items()):
        truth_img, mask_img = dataset.native_truth(label, target_site, CONTRAST)
        truth = np.asarray(truth_img.dataobj, np.float32)
        rng = np.random.default_rng([dataset.seed, index, RESCAN_STREAM])
        subjects.append(
            Subject(
                label=label,
                site=site,
                preproc=_data(_derivative(out, label, f"desc-preproc_{CONTRAST}")),
                harmonized=_data(_derivative(out, label, f"desc-harmonized_{CONTRAST}")),
                pipeline_mask=_data(_derivative(out, label, "desc-brain_mask")) > 0,
                template_preproc=_data(_derivative(out, label, f"space-{TEMPLATE}_res-2_desc-preproc_{CONTRAST}")),
                template_harmonized=_data(
                    _derivative(out, label, f"space-{TEMPLATE}_res-2_desc-harmonized_{CONTRAST}")
                ),
                rescan=add_rician_noise(truth, noise_sigma(target), rng, offset=target.intensity_offset),
                truth=truth,
                mask=np.asarray(mask_img.dataobj) > 0,
            )
        )
    return subjects


def score(
    native: list[NDArray], template: list[NDArray], subjects: list[Subject], template_mask: NDArray, target_site: str
) -> dict[str, float]:
    similarities = [similarity(o, s.rescan, s.mask) for o, s in zip(native, subjects, strict=True)]
    sites = [s.site for s in subjects]
    masks = [template_mask] * len(subjects)
    classifier = site_classifier_accuracy(template, masks, sites)
    return {
        "ssim": float(np.mean([x.ssim for x in similarities])),
        "psnr_db": float(np.mean([x.psnr for x in similarities])),
        "mae": float(np.mean([x.mae for x in similarities])),
        "ssim_clean": float(np.mean([similarity(o, s.truth, s.mask).ssim for o, s in zip(native, subjects)])),
        "self_ssim": float(
            np.mean([similarity(o, s.preproc, s.mask).ssim for o, s in zip(native, subjects) if s.site == target_site])
        ),
        "site_accuracy": classifier.accuracy,
        "chance": classifier.chance,
        "wasserstein": between_site_wasserstein(template, masks, sites),
        "dice_mean": float("nan"),
        "abs_volume_error": float("nan"),
        "seconds_per_image": float("nan"),
    }


def score_all(subjects: list[Subject], template_mask: NDArray, target_site: str) -> dict[str, dict[str, float]]:
    sites = [s.site for s in subjects]
    native_baselines = baseline_harmonizers(
        [s.preproc for s in subjects], [s.pipeline_mask for s in subjects], sites, target_site, CONTRAST
    )
    template_baselines = baseline_harmonizers(
        [s.template_preproc for s in subjects], [template_mask] * len(subjects), sites, target_site, CONTRAST
    )
    scores = {}
    for name, harmonize in native_baselines.items():
        native = [harmonize(s.preproc, s.pipeline_mask, s.site) for s in subjects]
        template = [template_baselines[name](s.template_preproc, template_mask, s.site) for s in subjects]
        scores[name] = score(native, template, subjects, template_mask, target_site)
    scores["MURD (pipeline)"] = score(
        [s.harmonized for s in subjects],
        [s.template_harmonized for s in subjects],
        subjects,
        template_mask,
        target_site,
    )
    return scores


def main(args: argparse.Namespace, command: str) -> int:
    from bids_harmonize.templates import get_template

    n_sites, per_site = 3, (4 if args.quick else 8)
    with tempfile.TemporaryDirectory() as temporary:
        root = args.work_dir or Path(temporary)
        start = time.perf_counter()
        dataset = simulated_phantom(
            root / "phantom", n_sites, per_site, args.reuse_dataset and args.work_dir is not None
        )
        timings = {"simulate": time.perf_counter() - start}
        out = root / "out"
        timings.update(
            run_pipeline(
                dataset, out, root / "work", _target_label(out, dataset, args.target_site), args.murd_iterations
            )
        )
        template_mask = _data(get_template(TEMPLATE, 2, "mask", "brain")) > 0
        scores = score_all(load_subjects(dataset, out, args.target_site), template_mask, args.target_site)
    chance = next(iter(scores.values()))["chance"]
    table = format_table(scores, chance)
    times = ", ".join(f"{step} {seconds / 60:.1f} min" for step, seconds in timings.items())
    header = (
        "# Harmonization quality of the whole pipeline, on native grids\n\n"
        f"Command: `{command}`  \nMachine: {machine()}, MURD on {device_name()}  \n"
        f"Data: {n_sites} sites x {per_site} subjects, {CONTRAST}, 2 mm, seed {SEED}; every subject scored; "
        f"target site {args.target_site}. Method: benchmarks/pipeline_quality.py; metrics: docs/qc.md.  \n"
        f"Time: {times}. Dice, volume error and s/image are not measured here (nan)."
    )
    print(f"{header}\n\n{table}")
    save_results(scores, table, "quality_pipeline_quick" if args.quick else "quality_pipeline", header)
    return 0


def _target_label(out: Path, dataset: SimulatedDataset, target_site: str) -> str:
    """The pipeline names sites by their scanner (sites.tsv); the simulator by site1, site2, ...
    Find the inferred label of the simulator's target site from the group level's dry run."""
    from bids_harmonize.sites.overrides import read_tsv

    _run("sites", [str(dataset.bids_root), str(out), "group", "--sites-only", "--contrasts", CONTRAST])
    rows = read_tsv(OutputLayout(out).sites_table)
    labels = {row["site"] for row in rows if dataset.site_of_subject[row["participant_id"][4:]] == target_site}
    if len(labels) != 1:
        raise SystemExit(f"site inference split or merged the simulator's {target_site}: {sorted(labels)}")
    return labels.pop()
