"""Which snapshot of the network a bundle keeps: a score on held-out training volumes.

A real study has no traveling subjects, so the score needs no ground truth. A few volumes of
every site are withheld from the gradient steps (the sampler neither draws them nor uses them as
references, data.SliceSampler.hold_out); the site anchors and site styles, closed-form
statistics of the whole study, still read them. At each validation point the EMA weights are
finalised as the bundle would be (styles.bundle_styles, on a copy), every held-out slice is
rendered into the style of every other site that has held-out volumes, and the score is the
training objective's deterministic terms, at the recipe's weights, on those renderings:
- histogram: W1 between a rendering's foreground intensities and a held-out real slice of the
  target site at the same height (the distribution distance to the target site);
- texture: the same for fine detail (noise, sharpness), where the recipe weighs it;
- cycle and gradient: the rendering carried back to its own site against the slice itself
  (self-reconstruction; identity is exact by construction and left out).
The bundle keeps the EMA weights of the lowest score. Step 0 (warmed-up curves, residual still
zero) is a candidate, so training that only drifts keeps the anchored map, and a longer recipe
cannot drift past its best point.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bids_harmonize.model.common import autocast_for
from bids_harmonize.model.data import SliceSampler
from bids_harmonize.model.losses import LossWeights, histogram_distance, image_gradient_l1, texture_distance
from bids_harmonize.model.networks import Translator
from bids_harmonize.model.styles import bundle_styles
from bids_harmonize.model.train_config import TrainConfig

LOGGER = logging.getLogger("bids_harmonize")

MIN_TRAINING_VOLUMES = 3  # a site keeps at least this many volumes for the gradient steps
SLICES_PER_VOLUME = 12  # evenly spaced usable slices of each held-out volume
STYLE_SLICES = 64  # slices per site for the snapshot's site styles (the bundle uses more)
TERMS = ("histogram", "texture", "cycle", "gradient")


@dataclass(frozen=True)
class ValidationSplit:
    """The volumes withheld from the gradient steps, or why there are none."""

    held_out: tuple[int, ...]
    reason: str = ""  # why validation is off ("" when it runs)


def validation_split(site_labels: Sequence[int], per_site: int) -> ValidationSplit:
    """Up to `per_site` volumes of each site, evenly spread over its volumes in input order (the
    same for every seed), from the sites that keep MIN_TRAINING_VOLUMES to train on. Validation
    needs two such sites, a source and a target; without them it is off, with a warning."""
    if per_site <= 0:
        return ValidationSplit((), "not asked for (validation_per_site = 0)")
    labels = [int(label) for label in site_labels]
    held_out, too_small = [], []
    for site in sorted(set(labels)):
        members = [index for index, label in enumerate(labels) if label == site]
        count = min(per_site, len(members) - MIN_TRAINING_VOLUMES)
        if count <= 0:
            too_small.append(site)
            continue
        held_out += [members[int((i + 0.5) * len(members) / count)] for i in range(count)]
    if len(set(labels)) - len(too_small) < 2:
        reason = (
            f"fewer than two sites have more than {MIN_TRAINING_VOLUMES} training volumes "
            f"(site indices {too_small} do not): the bundle keeps the last weights, unvalidated"
        )
        LOGGER.warning("MURD validation is off: %s.", reason)
        return ValidationSplit((), reason)
    LOGGER.info(
        "MURD validation: %d of %d volumes held out of the gradient steps to choose the snapshot kept",
        len(held_out),
        len(labels),
    )
    return ValidationSplit(tuple(sorted(held_out)))


class Validator:
    """Scores EMA snapshots on the held-out volumes and keeps the best one."""

    def __init__(
        self, sampler: SliceSampler, held_out: tuple[int, ...], weights: LossWeights, anchors: Tensor | None
    ) -> None:
        self.sampler, self.weights, self.anchors = sampler, weights, anchors
        labels = sampler.site_labels.cpu()
        self.by_site: dict[int, list[int]] = {}
        for volume in held_out:
            self.by_site.setdefault(int(labels[volume]), []).append(volume)
        self.sources = [(volume, int(labels[volume]), self._centres(volume)) for volume in held_out]
        self.history: list[tuple[int, float]] = []
        self.best_step, self.best_score, self.best_weights = -1, float("inf"), None

    def _centres(self, volume: int) -> Tensor:
        centre = self.sampler.slice_centre[self.sampler.slice_volume == volume]
        chosen = torch.linspace(0, len(centre) - 1, min(SLICES_PER_VOLUME, len(centre)), device=centre.device)
        return centre[chosen.round().long()]

    def validate(self, ema: Translator, step: int, batch_size: int) -> dict[str, float]:
        """Score this snapshot; keep its weights when it is the best so far. Returns the terms."""
        started = time.perf_counter()
        snapshot = copy.deepcopy(ema)
        styles = bundle_styles(snapshot, self.sampler, self.anchors, STYLE_SLICES, batch_size)
        terms = self.score(snapshot, styles)
        self.history.append((step, terms["score"]))
        if terms["score"] < self.best_score:
            self.best_step, self.best_score = step, terms["score"]
            self.best_weights = {name: value.clone() for name, value in ema.state_dict().items()}
        return {**terms, "seconds": round(time.perf_counter() - started, 3)}

    @torch.no_grad()
    def score(self, translator: Translator, styles: Tensor) -> dict[str, float]:
        """Mean of each term over (held-out slice, other site) pairs, and their weighted sum."""
        sums, pairs = dict.fromkeys(TERMS, 0.0), 0
        device = styles.device
        with autocast_for(device):
            for position, (volume, site, centres) in enumerate(self.sources):
                images = self.sampler.stacks(torch.full_like(centres, volume), centres)
                content = translator.content_encoder(images)
                own = styles[site].expand(len(centres), -1)
                for target, references in self.by_site.items():
                    if target == site:
                        continue
                    reference = references[position % len(references)]
                    real = self.sampler.stacks(torch.full_like(centres, reference), centres)
                    style = styles[target].expand(len(centres), -1)
                    fake = translator.render(content, images, style, own)
                    cycled = translator.render(translator.content_encoder(fake), fake, own, style)
                    sums["histogram"] += float(histogram_distance(fake.float(), real))
                    sums["texture"] += float(texture_distance(fake.float(), real))
                    sums["cycle"] += float(F.l1_loss(cycled.float(), images))
                    sums["gradient"] += float(image_gradient_l1(images, cycled.float()))
                    pairs += 1
        terms = {name: total / pairs for name, total in sums.items()}
        terms["score"] = sum(getattr(self.weights, name) * terms[name] for name in TERMS)
        return terms

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [tuple(entry) for entry in state["history"]]
        self.best_step, self.best_score = state["best_step"], state["best_score"]
        self.best_weights = state["best_weights"]

    def record(self, every: int) -> dict[str, Any]:
        """What the bundle's card says about the choice."""
        return {
            "held_out_volumes": sum(len(volumes) for volumes in self.by_site.values()),
            "every": every,
            "selected_step": self.best_step,
            "scores": [[step, round(score, 6)] for step, score in self.history],
        }


def validation_record(validator: Validator | None, split: ValidationSplit, config: TrainConfig) -> dict[str, Any]:
    """The card's account of which snapshot the bundle holds (nothing when none was asked for)."""
    if validator is not None:
        return {"validation": validator.record(config.validate_every)}
    if config.validation_per_site > 0:
        return {"validation": {"off": split.reason}}
    return {}
