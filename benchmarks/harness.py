"""What the benchmarks share, so that none imports another: MURD trained and applied as the
pipeline does it on the template grid, the thread count the CLI uses, a description of the
machine, and the quality benchmarks' simulated phantom, its scans, their train/test split and
the results table (quality.py, pipeline_quality.py, discriminator_sites.py)."""

from __future__ import annotations

import csv
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nb
import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc.baselines import Harmonizer

if TYPE_CHECKING:
    from bids_harmonize.simulate import SimulatedDataset


def cli_threads() -> int:
    """Torch threads of group training at the CLI's defaults (`--nprocs` = the CPU count, capped
    at 8: levels/run.py, training_threads)."""
    return max(1, min(8, os.cpu_count() or 1))


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB RAM, {system}"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name()})"
    return f"CPU ({torch.get_num_threads()} threads)"


@dataclass
class MurdTraining:
    """How one MURD model is trained, and what its training took."""

    recipe: str = "cpu"
    seed: int = 0
    iterations: int | None = None  # None: the recipe's
    overrides: dict = field(default_factory=dict)  # other TrainConfig fields that differ from the recipe
    seconds: float = 0.0
    load: float = 0.0  # 5-minute load average when training ended


@dataclass
class MurdSetup:
    """MURD's training inputs prepared as the group level prepares them, and the way back from a
    bundle to a harmonizer into the target site's intensity scale."""

    volumes: list[NDArray]
    labels: list[int]
    names: list[str]
    config: object  # MURDConfig
    options: object  # TrainConfig
    target_site: str
    target_scale: object  # preproc.operations.IntensityScale
    brain_mask: NDArray[np.bool_] | None = None  # the population's brain (the template mask's role)
    anchor_covariates: dict[str, list[float]] | None = None  # as the group level passes participants.tsv's

    def harmonizer(self, bundle) -> Harmonizer:
        from bids_harmonize.preproc.operations import robust_scale

        def harmonize(image: NDArray, mask: NDArray, source_site: str) -> NDArray:
            model_input = robust_scale(image, mask).to_model(image)
            # The population's brain mask: the template mask's role in the pipeline.
            harmonized = bundle.harmonize(
                model_input, self.target_site, source_site=source_site, brain_mask=self.brain_mask
            )
            return self.target_scale.to_scanner(harmonized)

        return harmonize

    def train(self, run: MurdTraining, work_dir: Path, on_step: Callable | None = None) -> Harmonizer:
        from bids_harmonize.model import load_bundle, train

        started = time.perf_counter()
        bundle_dir = train(
            self.volumes,
            self.labels,
            self.names,
            self.config,
            self.options,
            work_dir / "murd",
            brain_mask=self.brain_mask,
            anchor_covariates=self.anchor_covariates,
            work_dir=work_dir / "murd_training",
            resume=False,
            progress=False,
            on_step=on_step,
        )
        run.seconds = time.perf_counter() - started
        run.load = os.getloadavg()[1]
        return self.harmonizer(load_bundle(bundle_dir))


def prepare_murd(
    images: Sequence[NDArray],
    masks: Sequence[NDArray],
    sites: Sequence[str],
    target_site: str,
    run: MurdTraining,
    covariates: dict[str, list[float]] | None = None,
) -> MurdSetup:
    """Robust scaling, model input size from the brain masks and the recipe, as the group level
    does; the target intensity scale is the median of the target site's training scales.
    `covariates` (column -> one value per image) adjust the site anchors, as the group level's."""
    from bids_harmonize.model import preset_config
    from bids_harmonize.model.recipes import RECIPES
    from bids_harmonize.model.slices import model_image_size
    from bids_harmonize.preproc.operations import median_scale, robust_scale

    recipe = RECIPES[run.recipe]
    names = sorted(set(sites))
    scales = [robust_scale(image, mask) for image, mask in zip(images, masks, strict=True)]
    volumes = [scale.to_model(image) for image, scale in zip(images, scales, strict=True)]
    target_scale = median_scale([scale for scale, site in zip(scales, sites, strict=True) if site == target_site])
    union = np.any(np.asarray(masks, dtype=bool), axis=0)
    config = preset_config(recipe.preset, len(names), image_size=model_image_size(union))
    iterations = run.iterations or recipe.iterations
    options = recipe.train_config(
        iterations=iterations, seed=run.seed, checkpoint_every=iterations, log_every=10, **run.overrides
    )
    # Where at least half of the subjects have brain: the role the template mask plays in the pipeline.
    brain = np.mean(np.asarray(masks, dtype=bool), axis=0) >= 0.5
    labels = [names.index(site) for site in sites]
    return MurdSetup(volumes, labels, names, config, options, target_site, target_scale, brain, covariates)


# ----------------------------------------------------------------------------- the quality benchmarks' phantom
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
    rescan: NDArray  # the subject at the target site, with that site's noise (independent draw)
    truth: NDArray  # the noise-free render at the target site


def load_data(path: Path) -> NDArray:
    """A NIfTI file's values as stored."""
    return np.asarray(nb.load(path).dataobj)


def load_scans(dataset: SimulatedDataset, target_site: str, contrast: str = CONTRAST) -> list[Scan]:
    """Every subject of the phantom at its own site, with its rescan and render at `target_site`."""
    from bids_harmonize.simulate.dataset import RESCAN_STREAM, SCAN_STREAM

    truth = dataset.ground_truth
    return [
        Scan(
            subject=subject,
            site=site_label,
            image=dataset.noisy_render(subject, site_label, contrast, stream=SCAN_STREAM),
            mask=load_data(truth.mask_path(subject)) > 0,
            labels=load_data(truth.dseg_path(subject)),
            rescan=dataset.noisy_render(subject, target_site, contrast, stream=RESCAN_STREAM),
            truth=load_data(truth.render_path(subject, target_site, contrast)),
        )
        for subject, site_label in dataset.site_of_subject.items()
    ]


def split_train_test(scans: Sequence[Scan]) -> tuple[list[Scan], list[Scan]]:
    """The first half of each site's subjects (by label) train, the rest are held out."""
    train, test = [], []
    for site in sorted({scan.site for scan in scans}):
        at_site = sorted((s for s in scans if s.site == site), key=lambda s: s.subject)
        half = len(at_site) // 2
        train += at_site[:half]
        test += at_site[half:]
    return train, test


def simulated_phantom(out_dir: Path, n_sites: int, per_site: int, reuse: bool) -> SimulatedDataset:
    """The benchmark's dataset: simulated into out_dir, or (reuse) the one already there, which
    must have been simulated by this benchmark with the same size."""
    from bids_harmonize.simulate import SimulatedDataset, simulate_dataset
    from bids_harmonize.simulate.dataset import GROUND_TRUTH_DIR
    from bids_harmonize.simulate.sites import choose_sites

    n_subjects = n_sites * per_site
    if not reuse:
        return simulate_dataset(out_dir, n_sites, n_subjects, (CONTRAST,), 2.0, SEED, overwrite=True)
    found = sorted(p.name for p in out_dir.glob("sub-*"))
    if len(found) != n_subjects:
        raise SystemExit(f"--reuse-dataset: {out_dir} holds {len(found)} subjects, expected {n_subjects}")
    sites = tuple(site.at_resolution(2.0) for site in choose_sites(n_sites, SEED))
    width = max(2, len(str(n_subjects)))
    site_of_subject = {f"{i + 1:0{width}d}": sites[i % n_sites].label for i in range(n_subjects)}
    return SimulatedDataset(out_dir, out_dir / GROUND_TRUTH_DIR, sites, site_of_subject, (CONTRAST,), 2.0, SEED)


COLUMNS = {  # csv key -> Markdown header
    "ssim": "SSIM",
    "psnr_db": "PSNR (dB)",
    "mae": "MAE",
    "ssim_clean": "SSIM (noise-free)",
    "site_accuracy": "site acc.",
    "wasserstein": "Wasserstein",
    "dice_mean": "Dice (mean)",
    "abs_volume_error": "vol. err.",
    "self_ssim": "self-SSIM",
    "seconds_per_image": "s/image",
}


def format_table(scores: Mapping[str, Mapping[str, float]], chance: float, first: str = "method") -> str:
    header = [first, *COLUMNS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in scores.items():
        lines.append("| " + " | ".join([method, *(_cell(row, key) for key in COLUMNS)]) + " |")
    return "\n".join(lines) + f"\n\nSite-classifier chance level: {chance:.3f}."


def _cell(row: Mapping[str, float], key: str) -> str:
    """A value, with its interval where the row has one (`KEY_low`, `KEY_high`)."""
    if f"{key}_low" in row:
        return f"{row[key]:.4g} [{row[f'{key}_low']:.4g}, {row[f'{key}_high']:.4g}]"
    return f"{row[key]:.4g}"


def save_results(scores: Mapping[str, Mapping[str, float]], markdown: str, stem: str, header: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f"{stem}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        keys = list(next(iter(scores.values())))
        writer.writerow(["method", *keys])
        for method, row in scores.items():  # a row without a key (an SD row's interval) leaves its cell empty
            writer.writerow([method, *(f"{row[key]:.6g}" if key in row else "" for key in keys)])
    (RESULTS / f"{stem}.md").write_text(f"{header}\n\n{markdown}\n")
