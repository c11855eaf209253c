"""The training loop and its log: loss terms summed on the device between log points, written as JSON
lines, with a progress bar and checkpoints at their intervals."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from bids_harmonize.model.distributed import DistributedContext

LOG_NAME = "train_log.jsonl"
# Loss terms shown in the progress bar (all terms go to the log).
PROGRESS_TERMS = ("d_real", "d_fake", "g_adversarial", "g_cycle", "g_identity", "g_style")


class LossWindow:
    """Sums loss terms on the device between log points, so logging syncs once per window."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, terms: dict[str, Tensor]) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1

    def flush(self, context: DistributedContext) -> dict[str, float]:
        """Window means, averaged over all ranks; then start a new window."""
        names = sorted(self.sums)
        means = torch.stack([self.sums[name] for name in names]) / self.count
        if context.world_size > 1:
            dist.all_reduce(means)
            means /= context.world_size
        self.sums, self.count = {}, 0
        return dict(zip(names, means.tolist()))


class TrainingLog:
    """JSON lines, one per log window. On resume, lines past the checkpoint are dropped, since
    those steps are trained again."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        kept = []
        if resume_step > 0 and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
        path.write_text("".join(line + "\n" for line in kept))
        self.last: dict[str, Any] = json.loads(kept[-1]) if kept else {}

    def write(self, record: dict[str, Any]) -> None:
        self.last = record
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def run_training(
    trainer: Any,  # train.Trainer
    checkpoint: Path,
    log_path: Path,
    data_hash: str,
    progress: bool,
    on_step: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Iterate to the configured length with progress bar, log and checkpoints; returns metrics."""
    config, context = trainer.train_config, trainer.context
    log = TrainingLog(log_path, trainer.step) if context.is_main else None
    window = LossWindow()
    start_step, started = trainer.step, time.perf_counter()
    validated = trainer.step
    if trainer.step == 0 and log is not None:  # the warmed-up start is a candidate too (validation.py)
        scores = trainer.validate()
        if scores:
            log.write({"step": 0, **scores})
    bar = tqdm(total=config.iterations, initial=trainer.step, disable=not (progress and context.is_main), desc="MURD")
    with bar:
        while trainer.step < config.iterations:
            window.add(trainer.train_step())
            bar.update(1)
            if on_step is not None:
                on_step(trainer)
            finished = trainer.step == config.iterations
            if trainer.step % config.log_every == 0 or finished:
                elapsed = time.perf_counter() - started
                samples = (trainer.step - start_step) * config.batch_size * context.world_size
                record: dict[str, Any] = {"step": trainer.step, **trainer.learning_rates(), **window.flush(context)}
                record.update(elapsed_s=round(elapsed, 3), samples_per_s=round(samples / elapsed, 2))
                if trainer.step - validated >= config.validate_every or finished:
                    record.update(trainer.validate())
                    validated = trainer.step
                if log is not None:
                    log.write(record)
                bar.set_postfix({name: f"{record[name]:.3f}" for name in PROGRESS_TERMS})
            if trainer.step % config.checkpoint_every == 0 or finished:
                trainer.save_checkpoint(checkpoint, data_hash)
    return {"iterations": trainer.step, "final_window": log.last if log is not None else {}}
