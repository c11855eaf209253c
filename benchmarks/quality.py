"""Harmonization quality benchmark on the simulated multi-site phantom.

    python benchmarks/quality.py [--quick] [--target-site site1] [--work-dir DIR] [--seeds 0 1 2 3 4]
                                 [--murd-recipe cpu] [--murd-iterations N] [--snapshot-minutes 2 5 10]
    python benchmarks/quality.py --pipeline   # the real CLI on native grids (pipeline_quality.py)

Simulates a dataset with a fixed seed, splits each site's subjects into train and test halves,
fits every method on the training images, harmonizes each test image to the target site and
scores it (docs/qc.md has the metrics and why they are defined so). MURD is trained once per
seed (default 5) at the CLI's thread count; the table gives every seed's row, their mean and
their SD, and SSIM's bootstrap 95 % interval over the test subjects.

The benchmark works on the template grid, so it measures harmonization alone: the input of each
method is the subject's ground-truth render at its own site plus that site's Rician noise (as
after a perfect rigid registration and bias correction). "The target site's appearance" is what
the target scanner would give for the same subject: the reference is the subject's render at
the target site plus the target site's noise at an independent realisation (a rescan), and every
held-out image, the target site's own included, is harmonized and scored the same way. A
noise-free anatomy score (SSIM to the noise-free target render) is printed beside it.
Results: benchmarks/results/quality[_quick].{csv,md}.

Adding a method: write a `HarmonizerFactory` (training scans, target site, contrast) ->
`Harmonizer` and pass it in `run_benchmark(..., factories={name: factory})`, as `murd_factory`
does for MURD (`--murd-iterations 0` leaves it out).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc import (
    anatomy_preservation,
    between_site_wasserstein,
    similarity,
    site_classifier_accuracy,
)
from bids_harmonize.qc.baselines import Harmonizer, baseline_harmonizers
from bids_harmonize.qc.downstream import subject_mean

sys.path.insert(0, str(Path(__file__).parent))
from harness import (  # noqa: E402
    CONTRAST,
    SEED,
    MurdTraining,
    Scan,
    cli_threads,
    device_name,
    format_table,
    load_scans,
    machine,
    prepare_murd,
    save_results,
    simulated_phantom,
    split_train_test,
)

HarmonizerFactory = Callable[[Sequence[Scan], str, str], Harmonizer]


def baselines_factory(train: Sequence[Scan], target_site: str, contrast: str) -> dict[str, Harmonizer]:
    return baseline_harmonizers(
        [s.image for s in train], [s.mask for s in train], [s.site for s in train], target_site, contrast
    )


def score_outputs(
    outputs: Sequence[NDArray], test: Sequence[Scan], target_site: str, contrast: str
) -> dict[str, float]:
    """All metrics of one method's harmonized held-out scans (docs/qc.md).

    Similarity and anatomy: every held-out scan against its rescan at the target site (and the
    noise-free render for "ssim_clean"); self-SSIM: the target site's own scans against their
    input; site classifier and Wasserstein: every output, labelled with the site it came from.
    """
    pairs = list(zip(outputs, test, strict=True))
    similarities = [similarity(output, scan.rescan, scan.mask) for output, scan in pairs]
    anatomy = [anatomy_preservation(output, scan.mask, scan.labels, contrast) for output, scan in pairs]
    masks, sites = [s.mask for s in test], [s.site for s in test]
    classifier = site_classifier_accuracy(outputs, masks, sites)
    ssim = subject_mean([s.ssim for s in similarities])
    return {
        "ssim": ssim.value,
        "ssim_low": ssim.low,
        "ssim_high": ssim.high,
        "psnr_db": float(np.mean([s.psnr for s in similarities])),
        "mae": float(np.mean([s.mae for s in similarities])),
        "ssim_clean": float(np.mean([similarity(o, scan.truth, scan.mask).ssim for o, scan in pairs])),
        "self_ssim": float(
            np.mean([similarity(o, scan.image, scan.mask).ssim for o, scan in pairs if scan.site == target_site])
        ),
        "site_accuracy": classifier.accuracy,
        "chance": classifier.chance,
        "wasserstein": between_site_wasserstein(outputs, masks, sites),
        "dice_csf": float(np.mean([a.dice["CSF"] for a in anatomy])),
        "dice_gm": float(np.mean([a.dice["GM"] for a in anatomy])),
        "dice_wm": float(np.mean([a.dice["WM"] for a in anatomy])),
        "dice_mean": float(np.mean([a.mean_dice for a in anatomy])),
        "abs_volume_error": float(np.mean([a.mean_absolute_volume_error for a in anatomy])),
    }


def score_harmonizer(harmonize: Harmonizer, test: Sequence[Scan], target_site: str, contrast: str) -> dict[str, float]:
    start = time.perf_counter()
    outputs = [harmonize(scan.image, scan.mask, scan.site) for scan in test]
    seconds_per_image = (time.perf_counter() - start) / len(test)
    return {**score_outputs(outputs, test, target_site, contrast), "seconds_per_image": seconds_per_image}


def run_benchmark(
    train: Sequence[Scan],
    test: Sequence[Scan],
    target_site: str,
    factories: Mapping[str, HarmonizerFactory] | None = None,
    contrast: str = CONTRAST,
) -> dict[str, dict[str, float]]:
    """Scores of the baselines and of every method built by `factories`, by method name."""
    methods = dict(baselines_factory(train, target_site, contrast))
    for name, factory in (factories or {}).items():
        methods[name] = factory(train, target_site, contrast)
    return {name: score_harmonizer(harmonize, test, target_site, contrast) for name, harmonize in methods.items()}


@dataclass
class MurdRun:
    """How MURD is trained in the benchmark, and what it recorded along the way."""

    recipe: str = "cpu"
    iterations: int | None = None  # None: the recipe's
    seed: int = SEED
    snapshot_minutes: Sequence[float] = ()
    seconds: float = 0.0  # training time, snapshot scoring excluded
    load: float = 0.0  # 5-minute load average when training ended
    snapshots: list[dict[str, float]] = field(default_factory=list)

    def label(self) -> str:
        return f"MURD ({self.recipe}) seed {self.seed}"


def murd_factory(run: MurdRun, work_dir: Path, test: Sequence[Scan] = ()) -> HarmonizerFactory:
    """MURD as the pipeline runs it on the template grid (benchmarks/harness.py), seed `run.seed`.
    With `run.snapshot_minutes`, the EMA weights are also scored on `test` after those minutes
    of training (scoring time is not counted as training time)."""

    def build(train_scans: Sequence[Scan], target_site: str, contrast: str) -> Harmonizer:
        training = MurdTraining(run.recipe, run.seed, run.iterations)
        setup = prepare_murd(
            [s.image for s in train_scans],
            [s.mask for s in train_scans],
            [s.site for s in train_scans],
            target_site,
            training,
        )
        score = lambda bundle: score_harmonizer(setup.harmonizer(bundle), test, target_site, contrast)  # noqa: E731
        harmonize = setup.train(training, work_dir, on_step=_snapshotter(run, setup.names, work_dir, score))
        run.seconds = training.seconds - sum(s["scoring_s"] for s in run.snapshots)
        run.load = training.load
        return harmonize

    return build


def _snapshotter(run: MurdRun, sites: list[str], work_dir: Path, score: Callable) -> Callable | None:
    """An on_step callback that scores the EMA weights after each of `run.snapshot_minutes`."""
    if not run.snapshot_minutes:
        return None
    from bids_harmonize.model import load_bundle, save_bundle
    from bids_harmonize.model.styles import compute_site_styles

    marks = sorted(run.snapshot_minutes)
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def on_step(trainer) -> None:
        trained = time.perf_counter() - clock["start"] - clock["paused"]
        if not marks or trained < 60 * marks[0]:
            return
        began = time.perf_counter()
        minutes = marks.pop(0)
        styles = compute_site_styles(
            trainer.ema, trainer.sampler, trainer.train_config.style_slices_per_site, trainer.train_config.batch_size
        )
        path = save_bundle(work_dir / f"snapshot-{minutes:g}min", trainer.ema, sites, styles, data_hash="snapshot")
        scores = score(load_bundle(path))
        clock["paused"] += time.perf_counter() - began
        run.snapshots.append(
            {"minutes": minutes, "iterations": trainer.step, **scores, "scoring_s": time.perf_counter() - began}
        )
        print(
            f"  snapshot after {minutes:g} min ({trainer.step} iterations): SSIM {scores['ssim']:.4f}, "
            f"site acc. {scores['site_accuracy']:.3f}",
            flush=True,
        )

    return on_step


def seed_summary(per_seed: Mapping[str, Mapping[str, float]], label: str) -> dict[str, dict[str, float]]:
    """The seeds' mean row (SSIM interval: the envelope of the seeds' intervals) and SD row."""
    keys = next(iter(per_seed.values())).keys()
    table = {key: np.array([row[key] for row in per_seed.values()], dtype=float) for key in keys}
    mean = {key: float(values.mean()) for key, values in table.items()}
    mean.update(ssim_low=float(table["ssim_low"].min()), ssim_high=float(table["ssim_high"].max()))
    interval = ("ssim_low", "ssim_high")  # an SD row has no interval
    spread = {key: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for key, v in table.items() if key not in interval}
    spread["chance"] = mean["chance"]
    return {f"{label}, mean of {len(per_seed)} seeds": mean, f"{label}, SD over seeds": spread}


def _growth_table(run: MurdRun, chance: float) -> str:
    rows = {f"{s['minutes']:g} min ({s['iterations']} it.)": s for s in run.snapshots}
    return "Quality against training time (EMA weights):\n\n" + format_table(rows, chance, "MURD after")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 subjects per site instead of 8")
    parser.add_argument("--target-site", default="site1")
    parser.add_argument("--work-dir", type=Path, help="keep the simulated dataset here (default: temporary)")
    parser.add_argument("--reuse-dataset", action="store_true", help="use the dataset already in --work-dir")
    parser.add_argument("--murd-recipe", default="cpu", help="training recipe (bids_harmonize/model/recipes.py)")
    parser.add_argument("--murd-iterations", type=int, help="override the recipe's iterations (0: skip MURD)")
    parser.add_argument(
        "--snapshot-minutes", type=float, nargs="*", default=(), help="also score MURD after these training minutes"
    )
    parser.add_argument("--pipeline", action="store_true", help="run the real CLI and score native outputs instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="MURD training seeds")
    parser.add_argument("--threads", type=int, default=cli_threads(), help="torch threads (default: the CLI's)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.pipeline:
        from pipeline_quality import main as pipeline_main

        return pipeline_main(args, command.strip())
    n_sites, per_site = 3, (4 if args.quick else 8)
    # Snapshots (quality against training time) are scored for the first seed only.
    runs = [
        MurdRun(args.murd_recipe, args.murd_iterations, seed, args.snapshot_minutes if k == 0 else ())
        for k, seed in enumerate(args.seeds)
    ]

    with tempfile.TemporaryDirectory() as temporary:
        out_dir = args.work_dir or Path(temporary) / "phantom"
        start = time.perf_counter()
        dataset = simulated_phantom(out_dir, n_sites, per_site, args.reuse_dataset and args.work_dir is not None)
        simulated = time.perf_counter() - start
        train, test = split_train_test(load_scans(dataset, args.target_site))
        factories = {}
        if args.murd_iterations != 0:
            factories = {run.label(): murd_factory(run, Path(temporary) / f"seed{run.seed}", test) for run in runs}
        scores = run_benchmark(train, test, args.target_site, factories=factories)
    total = time.perf_counter() - start
    if factories:
        scores.update(seed_summary({run.label(): scores[run.label()] for run in runs}, f"MURD ({args.murd_recipe})"))

    chance = next(iter(scores.values()))["chance"]
    table = format_table(scores, chance)
    if runs[0].snapshots:
        table += "\n\n" + _growth_table(runs[0], chance)
    header = (
        f"# Harmonization quality on the simulated phantom\n\n"
        f"Command: `{command.strip()}`  \nMachine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end  \n"
        f"Data: {n_sites} sites x {per_site} subjects, {CONTRAST}, 2 mm, simulation seed {SEED}; "
        f"train/test = first/second half of each site's subjects; target site {args.target_site}.  \n"
        f"Time: simulation {simulated:.0f} s, total {total:.0f} s. Metrics: docs/qc.md; SSIM: mean [bootstrap 95 % "
        "interval over the test subjects; for the seed mean, the envelope of the seeds' intervals].  \n"
        + (
            f"MURD: recipe {args.murd_recipe!r}"
            f"{f', {args.murd_iterations} iterations' if args.murd_iterations else ''}, seeds {args.seeds}, trained in "
            f"{np.mean([run.seconds for run in runs]) / 60:.1f} min per seed on {device_name()}, 5-minute load "
            f"average {max(run.load for run in runs):.1f} at most when a training ended."
            if factories
            else "MURD: not run."
        )
    )
    print(f"{header}\n\n{table}")
    save_results(scores, table, "quality_quick" if args.quick else "quality", header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
