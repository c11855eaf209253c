"""What the quality benchmarks share: MURD trained and applied as the pipeline does it on the
template grid, the thread count the CLI uses, and a description of the machine."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bids_harmonize.qc.baselines import Harmonizer


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

    def harmonizer(self, bundle) -> Harmonizer:
        from bids_harmonize.preproc.operations import robust_scale

        def harmonize(image: NDArray, mask: NDArray, source_site: str) -> NDArray:
            model_input = robust_scale(image, mask).to_model(image)
            return self.target_scale.to_scanner(bundle.harmonize(model_input, self.target_site, source_site=source_site))

        return harmonize

    def train(self, run: MurdTraining, work_dir: Path, on_step: Callable | None = None) -> Harmonizer:
        from bids_harmonize.model import load_bundle, train

        started = time.perf_counter()
        bundle_dir = train(self.volumes, self.labels, self.names, self.config, self.options, work_dir / "murd",
                           work_dir=work_dir / "murd_training", resume=False, progress=False, on_step=on_step)
        run.seconds = time.perf_counter() - started
        run.load = os.getloadavg()[1]
        return self.harmonizer(load_bundle(bundle_dir))


def prepare_murd(
    images: Sequence[NDArray], masks: Sequence[NDArray], sites: Sequence[str], target_site: str, run: MurdTraining
) -> MurdSetup:
    """Robust scaling, model input size from the brain masks and the recipe, as the group level
    does; the target intensity scale is the median of the target site's training scales."""
    from bids_harmonize.model import preset_config
    from bids_harmonize.model.recipes import RECIPES
    from bids_harmonize.preproc.operations import median_scale, robust_scale
    from bids_harmonize.model.slices import model_image_size

    recipe = RECIPES[run.recipe]
    names = sorted(set(sites))
    scales = [robust_scale(image, mask) for image, mask in zip(images, masks, strict=True)]
    volumes = [scale.to_model(image) for image, scale in zip(images, scales, strict=True)]
    target_scale = median_scale([scale for scale, site in zip(scales, sites, strict=True) if site == target_site])
    union = np.any(np.asarray(masks, dtype=bool), axis=0)
    config = preset_config(recipe.preset, len(names), image_size=model_image_size(union))
    iterations = run.iterations or recipe.iterations
    options = recipe.train_config(iterations=iterations, seed=run.seed, checkpoint_every=iterations, log_every=10)
    return MurdSetup(volumes, [names.index(site) for site in sites], names, config, options, target_site, target_scale)
