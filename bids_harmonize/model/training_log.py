"""The training log: loss terms summed on the device between log points, written as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from bids_harmonize.model.distributed import DistributedContext

LOG_NAME = "train_log.jsonl"


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
