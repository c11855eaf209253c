"""Training recipes: which preset and optimisation settings `group` uses on each kind of device.

A recipe is chosen by measurement (docs/model.md, benchmarks/results/quality.md): "cpu" is the
style-aware layout sized to reach its quality in about a quarter of an hour on 2 cores; "gpu"
is the same layout at the reference widths and a GPU-sized number of iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bids_harmonize.model.losses import LossWeights
from bids_harmonize.model.train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A network preset plus the TrainConfig fields that differ from its defaults."""

    preset: str
    iterations: int
    batch_size: int
    train_options: dict[str, Any] = field(default_factory=dict)

    def train_config(self, **overrides: Any) -> TrainConfig:
        fields = {"iterations": self.iterations, "batch_size": self.batch_size, **self.train_options}
        return TrainConfig(**{**fields, **overrides})


RECIPES: dict[str, Recipe] = {
    "cpu": Recipe(
        preset="cpu",
        iterations=600,
        batch_size=8,
        train_options={
            "lr": 5e-4,
            "lr_mapping": 5e-6,
            "ema_decay": 0.99,
            "content_noise_std": 0.1,
            "crop_size": 48,
            "loss_weights": LossWeights(histogram=10.0),
        },
    ),
    "gpu": Recipe(
        preset="reference",
        iterations=20_000,
        batch_size=8,
        train_options={
            "lr": 2e-4,
            "lr_mapping": 2e-6,
            "ema_decay": 0.999,
            "content_noise_std": 0.1,
            "loss_weights": LossWeights(histogram=10.0),
        },
    ),
}


def recipe_for(device_type: str) -> Recipe:
    """The recipe for a torch device type: "cuda" gets the GPU recipe, anything else the CPU one."""
    return RECIPES["gpu" if device_type == "cuda" else "cpu"]
