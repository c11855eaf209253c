"""Harmonization quality benchmark on the simulated multi-site phantom.

    python benchmarks/quality.py [--quick] [--target-site site1] [--work-dir DIR] [--murd-iterations 400]

Simulates a dataset with a fixed seed, splits each site's subjects into train and test halves,
fits every method on the training images, harmonizes each test image to the target site and
scores it against that subject's ground truth at the target site (docs/qc.md has the metrics).

The benchmark works on the template grid, so it measures harmonization alone: the input of each
method is the subject's ground-truth render at its own site plus that site's Rician noise (as
after a perfect rigid registration and bias correction); the reference is the noise-free render
at the target site. Results: benchmarks/results/quality[_quick].{csv,md}.

Adding a method: write a `HarmonizerFactory` (training scans, target site, contrast) ->
`Harmonizer` and pass it in `run_benchmark(..., factories={name: factory})`, as `murd_factory`
does for MURD (`--murd-iterations 0` leaves it out).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc import (
    Harmonizer,
    anatomy_preservation,
    baseline_harmonizers,
    between_site_wasserstein,
    similarity,
    site_classifier_accuracy,
)
from bids_harmonize.simulate import SimulatedDataset, add_rician_noise, noise_sigma, simulate_dataset

RESULTS = Path(__file__).parent / "results"
CONTRAST = "T1w"
SEED = 0


@dataclass(frozen=True)
class Scan:
    """One subject's image at its own site, with what it is scored against."""

    subject: str
    site: str
    image: NDArray
    mask: NDArray[np.bool_]
    labels: NDArray[np.uint8]
    target: NDArray


HarmonizerFactory = Callable[[Sequence[Scan], str, str], Harmonizer]


def _load(path: Path) -> NDArray:
    return np.asarray(nb.load(path).dataobj)


def load_scans(dataset: SimulatedDataset, target_site: str, contrast: str = CONTRAST) -> list[Scan]:
    truth = dataset.ground_truth
    scans = []
    for index, (subject, site_label) in enumerate(dataset.site_of_subject.items()):
        site = dataset.site(site_label)
        own_render = _load(truth.render_path(subject, site_label, contrast))
        noise_rng = np.random.default_rng([dataset.seed, index, 99])
        scans.append(
            Scan(
                subject=subject,
                site=site_label,
                image=add_rician_noise(
                    own_render, noise_sigma(site), noise_rng, offset=site.intensity_offset
                ),
                mask=_load(truth.mask_path(subject)) > 0,
                labels=_load(truth.dseg_path(subject)),
                target=_load(truth.render_path(subject, target_site, contrast)),
            )
        )
    return scans


def split_train_test(scans: Sequence[Scan]) -> tuple[list[Scan], list[Scan]]:
    """The first half of each site's subjects (by label) train, the rest are held out."""
    train, test = [], []
    for site in sorted({scan.site for scan in scans}):
        at_site = sorted((s for s in scans if s.site == site), key=lambda s: s.subject)
        half = len(at_site) // 2
        train += at_site[:half]
        test += at_site[half:]
    return train, test


def baselines_factory(train: Sequence[Scan], target_site: str, contrast: str) -> dict[str, Harmonizer]:
    return baseline_harmonizers(
        [s.image for s in train], [s.mask for s in train], [s.site for s in train], target_site, contrast
    )


def score_harmonizer(
    harmonize: Harmonizer, test: Sequence[Scan], target_site: str, contrast: str
) -> dict[str, float]:
    """All metrics of one method on the held-out scans.

    Similarity and anatomy: test scans from other sites, harmonized to `target_site`, against
    their ground truth there. Site classifier and Wasserstein: every harmonized test scan,
    labelled with the site it came from.
    """
    start = time.perf_counter()
    outputs = [harmonize(scan.image, scan.mask, scan.site) for scan in test]
    seconds_per_image = (time.perf_counter() - start) / len(test)
    moved = [(output, scan) for output, scan in zip(outputs, test, strict=True) if scan.site != target_site]
    similarities = [similarity(output, scan.target, scan.mask) for output, scan in moved]
    anatomy = [anatomy_preservation(output, scan.mask, scan.labels, contrast) for output, scan in moved]
    masks, sites = [s.mask for s in test], [s.site for s in test]
    classifier = site_classifier_accuracy(outputs, masks, sites)
    return {
        "ssim": float(np.mean([s.ssim for s in similarities])),
        "psnr_db": float(np.mean([s.psnr for s in similarities])),
        "mae": float(np.mean([s.mae for s in similarities])),
        "site_accuracy": classifier.accuracy,
        "chance": classifier.chance,
        "wasserstein": between_site_wasserstein(outputs, masks, sites),
        "dice_csf": float(np.mean([a.dice["CSF"] for a in anatomy])),
        "dice_gm": float(np.mean([a.dice["GM"] for a in anatomy])),
        "dice_wm": float(np.mean([a.dice["WM"] for a in anatomy])),
        "dice_mean": float(np.mean([a.mean_dice for a in anatomy])),
        "abs_volume_error": float(np.mean([a.mean_absolute_volume_error for a in anatomy])),
        "seconds_per_image": seconds_per_image,
    }


def run_benchmark(
    dataset: SimulatedDataset,
    target_site: str,
    factories: Mapping[str, HarmonizerFactory] | None = None,
    contrast: str = CONTRAST,
) -> dict[str, dict[str, float]]:
    """Scores of the baselines and of every method built by `factories`, by method name."""
    train, test = split_train_test(load_scans(dataset, target_site, contrast))
    methods = dict(baselines_factory(train, target_site, contrast))
    for name, factory in (factories or {}).items():
        methods[name] = factory(train, target_site, contrast)
    return {
        name: score_harmonizer(harmonize, test, target_site, contrast) for name, harmonize in methods.items()
    }


def murd_factory(iterations: int, work_dir: Path) -> HarmonizerFactory:
    """MURD as the pipeline runs it on the template grid: the same robust scaling, model input
    size and target intensity scale (median of the target site's training scales), tiny preset."""

    def build(train_scans: Sequence[Scan], target_site: str, contrast: str) -> Harmonizer:
        from bids_harmonize.model import TrainConfig, load_bundle, preset_config, train
        from bids_harmonize.preproc.operations import median_scale, robust_scale
        from bids_harmonize.workflows.run import model_image_size

        sites = sorted({scan.site for scan in train_scans})
        scales = [robust_scale(scan.image, scan.mask) for scan in train_scans]
        volumes = [scale.to_model(scan.image) for scan, scale in zip(train_scans, scales)]
        target_scale = median_scale([scale for scan, scale in zip(train_scans, scales) if scan.site == target_site])
        union = np.any([scan.mask for scan in train_scans], axis=0)
        config = preset_config("tiny", len(sites), image_size=model_image_size(union))
        options = TrainConfig(iterations=iterations, batch_size=4, seed=SEED, checkpoint_every=iterations, log_every=10)
        bundle = load_bundle(train(volumes, [sites.index(s.site) for s in train_scans], sites, config, options,
                                   work_dir / "murd", work_dir=work_dir / "murd_training", progress=False))

        def harmonize(image: NDArray, mask: NDArray, source_site: str) -> NDArray:
            scale = robust_scale(image, mask)
            return target_scale.to_scanner(bundle.harmonize(scale.to_model(image), target_site))

        return harmonize

    return build


def _machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB RAM, {system}"


COLUMNS = {  # csv key -> Markdown header
    "ssim": "SSIM",
    "psnr_db": "PSNR (dB)",
    "mae": "MAE",
    "site_accuracy": "site acc.",
    "wasserstein": "Wasserstein",
    "dice_mean": "Dice (mean)",
    "abs_volume_error": "vol. err.",
    "seconds_per_image": "s/image",
}


def format_table(scores: Mapping[str, Mapping[str, float]], chance: float) -> str:
    header = ["method", *COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in scores.items():
        lines.append("| " + " | ".join([method, *(f"{row[key]:.4g}" for key in COLUMNS)]) + " |")
    return "\n".join(lines) + f"\n\nSite-classifier chance level: {chance:.3f}."


def save_results(scores: Mapping[str, Mapping[str, float]], markdown: str, stem: str, header: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        keys = list(next(iter(scores.values())))
        writer.writerow(["method", *keys])
        for method, row in scores.items():
            writer.writerow([method, *(f"{row[key]:.6g}" for key in keys)])
    (RESULTS / f"{stem}.md").write_text(f"{header}\n\n{markdown}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 subjects per site instead of 8")
    parser.add_argument("--target-site", default="site1")
    parser.add_argument("--work-dir", type=Path, help="keep the simulated dataset here (default: temporary)")
    parser.add_argument("--murd-iterations", type=int, default=400, help="tiny-preset MURD training on CPU (0: skip)")
    args = parser.parse_args(argv)
    n_sites, per_site = 3, (4 if args.quick else 8)

    with tempfile.TemporaryDirectory() as temporary:
        out_dir = args.work_dir or Path(temporary) / "phantom"
        start = time.perf_counter()
        dataset = simulate_dataset(
            out_dir, n_sites, n_sites * per_site, (CONTRAST,), 2.0, SEED, overwrite=True
        )
        simulated = time.perf_counter() - start
        factories = {"MURD (tiny)": murd_factory(args.murd_iterations, Path(temporary))} if args.murd_iterations else {}
        scores = run_benchmark(dataset, args.target_site, factories=factories)
    total = time.perf_counter() - start

    chance = next(iter(scores.values()))["chance"]
    table = format_table(scores, chance)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"# Harmonization quality on the simulated phantom\n\n"
        f"Command: `{command.strip()}`  \nMachine: {_machine()}  \n"
        f"Data: {n_sites} sites x {per_site} subjects, {CONTRAST}, 2 mm, seed {SEED}; "
        f"train/test = first/second half of each site's subjects; target site {args.target_site}.  \n"
        f"Time: simulation {simulated:.0f} s, total {total:.0f} s. Metrics: docs/qc.md.  \n"
        f"MURD: tiny preset, {args.murd_iterations} iterations, batch 4, on CPU (a CPU-sized budget; "
        f"the reference trains 100k iterations at full width on a GPU)."
    )
    print(f"{header}\n\n{table}")
    save_results(scores, table, "quality_quick" if args.quick else "quality", header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
