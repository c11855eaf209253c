"""Optimisation settings of MURD training, and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bids_harmonize.model.common import dataclass_from_dict
from bids_harmonize.model.losses import LossWeights
from bids_harmonize.model.slices import MIN_FOREGROUND


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults follow the reference except where docs/model.md says why."""

    iterations: int = 100_000
    batch_size: int = 8  # per process; the reference used 1
    lr: float = 1e-4  # content/style encoders, generator, discriminator
    lr_mapping: float = 1e-6  # mapping network
    beta1: float = 0.0
    beta2: float = 0.99
    ema_decay: float = 0.999
    decay_start: int | None = None  # lr is constant until here, then falls linearly to 0; None = half way
    seed: int = 0
    checkpoint_every: int = 1_000
    log_every: int = 100
    site_balanced: bool = True
    content_noise_std: float = 1.0
    crop_size: int | None = None  # train on random square crops of this size (None: whole slices)
    min_foreground: float = MIN_FOREGROUND  # slices with less foreground (fraction of voxels) are skipped
    style_slices_per_site: int = 512  # slices averaged into each site's deterministic style
    curve_warmup: int = 0  # steps fitting the style curves to the site anchors first (anchors.py)
    validation_per_site: int = 0  # volumes per site withheld to choose the kept snapshot (validation.py); 0: last
    validate_every: int = 1_000  # iterations between validations (at log points; also at the start and the end)
    compile: bool = False  # torch.compile the translator's networks (not the discriminator: R1 needs double backward)
    loss_weights: LossWeights = LossWeights()

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("iterations, batch_size and log_every must be >= 1")
        if self.checkpoint_every < 1 or self.checkpoint_every % self.log_every != 0:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a positive multiple of log_every "
                f"({self.log_every}) so a resumed run logs the same windows"
            )
        if not 0 <= self.decay_start_step <= self.iterations:
            raise ValueError(f"decay_start must lie in [0, iterations], got {self.decay_start}")
        if self.validation_per_site < 0 or self.validate_every < 1:
            raise ValueError("validation_per_site must be >= 0 and validate_every >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")

    @property
    def decay_start_step(self) -> int:
        return self.iterations // 2 if self.decay_start is None else self.decay_start

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        fields = dict(data)
        fields["loss_weights"] = LossWeights.from_dict(fields.get("loss_weights", {}))
        return dataclass_from_dict(cls, fields)


def lr_factor(step: int, *, iterations: int, decay_start: int) -> float:
    """Multiplier of the base learning rate: 1 until decay_start, then linear down to 0."""
    if step < decay_start:
        return 1.0
    return max(0.0, (iterations - step) / max(1, iterations - decay_start))
