"""MURD training: one discriminator step then one generator step per iteration, EMA weights,
exact resume from checkpoints, a JSON-lines loss log, and DistributedDataParallel via torchrun.

Entry point: `train(...)`, which ends by writing a model bundle (see bundle.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from bids_harmonize.model.anchors import (
    adjusted_site_quantiles,
    anchor_curves,
    anchor_record,
    covariate_matrix,
    fit_curves_to_anchors,
    site_quantiles,
    volume_quantiles,
)
from bids_harmonize.model.bundle import save_bundle
from bids_harmonize.model.card import InputContract
from bids_harmonize.model.checkpoint import (
    CHECKPOINT_NAME,
    global_rng_state,
    load_if_resumable,
    set_global_rng_state,
)
from bids_harmonize.model.common import autocast_for, resolve_device
from bids_harmonize.model.data import (
    SliceSampler,
    VolumeSet,
    VolumeSource,
    check_site_labels,
    data_fingerprint,
    mask_slices_first,
    training_volume_set,
)
from bids_harmonize.model.distributed import DistributedContext, init_distributed
from bids_harmonize.model.losses import (
    GeneratorStep,
    TrainingBatch,
    discriminator_terms,
    weighted_discriminator_loss,
    weighted_generator_loss,
)
from bids_harmonize.model.networks import (
    CONV_MEMORY_FORMAT,
    MURDConfig,
    build_discriminator,
    build_translator,
)
from bids_harmonize.model.styles import bundle_styles, site_noise
from bids_harmonize.model.train_config import TrainConfig, lr_factor
from bids_harmonize.model.training_log import LOG_NAME, run_training
from bids_harmonize.model.validation import Validator, validation_record, validation_split
from bids_harmonize.utils import atomic_write


class Trainer:
    """Networks, EMA copy, optimisers and schedules, and one training iteration."""

    def __init__(
        self,
        config: MURDConfig,
        train_config: TrainConfig,
        sampler: SliceSampler,
        device: torch.device,
        context: DistributedContext = DistributedContext(),
        brain_mask: Tensor | None = None,
        anchor_covariates: Tensor | None = None,
        held_out: tuple[int, ...] = (),
    ) -> None:
        self.config, self.train_config, self.sampler = config, train_config, sampler
        self.device, self.context = device, context
        torch.manual_seed(train_config.seed)  # the same initial weights on every rank
        self.translator = build_translator(config).to(device)
        self.discriminator = build_discriminator(config).to(device)
        self.ema = copy.deepcopy(self.translator).requires_grad_(False)
        if train_config.compile:
            for network in (self.translator.content_encoder, self.translator.style_encoder, self.translator.generator):
                network.compile()
        self.anchor_volumes = 0  # training volumes that set covariate-adjusted anchors (0: pooled anchors)
        self.anchor_quantiles: Tensor | None = None  # (num_sites, levels), model range; the bundle keeps them
        self.curve_anchors = self._curve_anchors(brain_mask, anchor_covariates)
        self.validator = None
        if held_out:  # after the anchors, which read every volume; the gradient steps then skip these
            sampler.hold_out(held_out)
            self.validator = Validator(sampler, held_out, train_config.loss_weights, self.curve_anchors)
        self.generator_step = self._parallel(GeneratorStep(self.translator, self.curve_anchors))
        self.discriminator_step = self._parallel(self.discriminator)
        betas = (train_config.beta1, train_config.beta2)
        translator = self.translator
        self.generator_optimizer = torch.optim.Adam(
            [
                {
                    "params": [
                        *translator.content_encoder.parameters(),
                        *translator.style_encoder.parameters(),
                        *translator.generator.parameters(),
                    ]
                },
                {"params": translator.mapping.parameters(), "lr": train_config.lr_mapping},
            ],
            lr=train_config.lr,
            betas=betas,
        )
        self.discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=train_config.lr, betas=betas
        )
        schedule = functools.partial(
            lr_factor, iterations=train_config.iterations, decay_start=train_config.decay_start_step
        )
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
            for optimizer in (self.generator_optimizer, self.discriminator_optimizer)
        ]
        self.step = 0

    def _curve_anchors(self, brain_mask: Tensor | None, covariates: Tensor | None) -> Tensor | None:
        """Each site's anchor curve from its training slices, when the anchor term is on; with
        covariates, from every site's quantiles at the same covariate values (anchors.py)."""
        if self.train_config.loss_weights.anchor == 0 or not self.translator.needs_source_style:
            return None
        if covariates is None:
            quantiles = site_quantiles(self.sampler, self.train_config.style_slices_per_site, brain_mask)
        else:
            per_volume = volume_quantiles(self.sampler, brain_mask)
            quantiles, self.anchor_volumes = adjusted_site_quantiles(
                per_volume, self.sampler.site_labels, covariates, self.config.num_sites
            )
        self.anchor_quantiles = quantiles.clamp(-1.0, 1.0).cpu()
        return anchor_curves(quantiles, self.config.curve_knots).to(self.device)

    def warm_up_curves(self) -> None:
        """Before the first iteration, fit the style curves to the site anchors (anchors.py);
        the EMA copy then starts from the warmed-up weights."""
        steps = self.train_config.curve_warmup
        if self.curve_anchors is None or steps == 0 or self.step > 0:
            return
        betas = (self.train_config.beta1, self.train_config.beta2)
        fit_curves_to_anchors(self.translator, self.sampler, self.curve_anchors, steps, self.train_config.lr, betas)
        if self.context.world_size > 1:  # ranks warmed up on their own batches: keep rank 0's weights
            for parameter in self.translator.parameters():
                dist.broadcast(parameter.data, src=0)
        self.ema.load_state_dict(self.translator.state_dict())

    def validate(self) -> dict[str, float]:
        """Score the EMA weights on the held-out volumes (main process only; validation.py)."""
        if self.validator is None or not self.context.is_main:
            return {}
        terms = self.validator.validate(self.ema, self.step, self.train_config.batch_size)
        return {f"val_{name}": value for name, value in terms.items()}

    def keep_best_snapshot(self) -> None:
        """Put the best-scoring EMA weights back (no-op without validation)."""
        if self.validator is not None and self.validator.best_weights is not None:
            self.ema.load_state_dict(self.validator.best_weights)

    def _parallel(self, module: nn.Module) -> nn.Module:
        if self.context.world_size == 1:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)

    def train_step(self) -> dict[str, Tensor]:
        """One discriminator step, one generator step, EMA update; returns the detached terms."""
        batch = self.sampler.sample()
        batch.images = batch.images.contiguous(memory_format=CONV_MEMORY_FORMAT)
        diversity_fakes = self._diversity_fakes(batch)
        d_terms = self._discriminator_update(batch, diversity_fakes)
        g_terms = self._generator_update(batch, diversity_fakes)
        self._update_ema()
        for scheduler in self.schedulers:
            scheduler.step()
        self.step += 1
        return {**_prefixed("d_", d_terms), **_prefixed("g_", g_terms)}

    @torch.no_grad()
    def _diversity_fakes(self, batch: TrainingBatch) -> Tensor:
        """G(E_c(x) + noise, F_j(z2)): the discriminator's fakes and the diversity term's second image.

        The translator does not change before the generator step, so this equals the detached
        second rendering the diversity term needs; computing it once saves a generator pass.
        """
        translator, images = self.translator, batch.images
        with autocast_for(self.device):
            content = translator.content_encoder(images) + batch.content_noise
            style = translator.mapping(batch.diversity_latents, batch.target_sites)
            return translator.render(content, images, style, translator.style_encoder(images, batch.source_sites))

    def _discriminator_update(self, batch: TrainingBatch, fakes: Tensor) -> dict[str, Tensor]:
        with autocast_for(self.device):
            terms = discriminator_terms(
                self.discriminator_step, batch.images, batch.source_sites, fakes, batch.target_sites
            )
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        weighted_discriminator_loss(terms, self.train_config.loss_weights).backward()
        self.discriminator_optimizer.step()
        return terms

    def _generator_update(self, batch: TrainingBatch, diversity_fakes: Tensor) -> dict[str, Tensor]:
        self.discriminator.requires_grad_(False)  # D only passes gradients through to the fakes
        with autocast_for(self.device):
            terms = self.generator_step(batch, diversity_fakes, self.discriminator)
        self.generator_optimizer.zero_grad(set_to_none=True)
        weighted_generator_loss(terms, self.train_config.loss_weights).backward()
        self.generator_optimizer.step()
        self.discriminator.requires_grad_(True)
        return terms

    @torch.no_grad()
    def _update_ema(self) -> None:
        """EMA with the usual warm-up: decay min(ema_decay, (1 + t) / (10 + t)) at step t, so the
        average forgets the random initial weights early; after ~10k steps it is the plain EMA."""
        decay = min(self.train_config.ema_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.translator.parameters()), 1.0 - decay)

    def learning_rates(self) -> dict[str, float]:
        groups = self.generator_optimizer.param_groups
        return {"lr": groups[0]["lr"], "lr_mapping": groups[1]["lr"]}

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs; rank-local random states are gathered from all ranks."""
        local = {"sampler": self.sampler.state_dict(), "rng": global_rng_state()}
        per_rank = [local]
        if self.context.world_size > 1:
            per_rank = [None] * self.context.world_size
            dist.all_gather_object(per_rank, local)
        return {
            "step": self.step,
            "model_config": self.config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "translator": self.translator.state_dict(),
            "ema": self.ema.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "per_rank": per_rank,
            "validation": None if self.validator is None else self.validator.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.translator.load_state_dict(state["translator"])
        self.ema.load_state_dict(state["ema"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        for scheduler, scheduler_state in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(scheduler_state)
        if self.validator is not None and state.get("validation"):
            self.validator.load_state_dict(state["validation"])
        local = state["per_rank"][self.context.rank]
        self.sampler.load_state_dict(local["sampler"])
        set_global_rng_state(local["rng"])

    def run_facts(self, data_hash: str) -> dict[str, Any]:
        """What a checkpoint must match to be continued by this run (see checkpoint.py)."""
        return {
            "data_hash": data_hash,
            "n_volumes": self.sampler.volumes.shape[0],
            "model_config": self.config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "world_size": self.context.world_size,
        }

    def save_checkpoint(self, path: Path, data_hash: str) -> None:
        """Write atomically (temp file, then rename) so a crash never leaves half a checkpoint."""
        state = self.state_dict()  # collective under DDP: every rank must call this
        if self.context.is_main:
            state.update(data_hash=data_hash, n_volumes=self.sampler.volumes.shape[0])
            atomic_write(path, lambda tmp: torch.save(state, tmp))

    def resume_if_possible(self, path: Path, data_hash: str) -> None:
        """Continue from the checkpoint at `path` when it was written for this data and these
        settings; otherwise start afresh and say why (checkpoint.load_if_resumable)."""
        state = load_if_resumable(path, self.run_facts(data_hash), self.context.is_main)
        if state is not None:
            self.load_state_dict(state)


def _prefixed(prefix: str, terms: dict[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + name: value.detach().float() for name, value in terms.items()}


def train(
    volumes: Sequence[VolumeSource] | VolumeSet,
    site_labels: Sequence[int],
    site_names: Sequence[str],
    config: MURDConfig,
    train_config: TrainConfig,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    resume: bool = True,
    *,
    work_dir: str | os.PathLike | None = None,
    data_hash: str | None = None,
    site_signatures: dict[str, dict[str, Any]] | None = None,
    input_contract: InputContract | None = None,
    slice_axis: int = 2,
    brain_mask: np.ndarray | None = None,
    anchor_covariates: Mapping[str, Sequence[float | None]] | None = None,
    progress: bool = True,
    on_step: Callable[[Trainer], None] | None = None,
) -> Path:
    """Train MURD on template-space volumes and write a model bundle into `out_dir`.

    volumes: arrays or NIfTI paths on one grid, scaled to [-1, 1] with background at -1 (stacked
    in RAM), or rows of an on-disk store (store.StoredVolumes, read as batches need them);
    site_labels[i] indexes site_names. `work_dir` (default `out_dir/training`) receives
    checkpoint.pt and train_log.jsonl (the bundle itself is model.json + model.safetensors; a
    workflow may put work_dir elsewhere); with `resume`, a checkpoint there written for the same
    data and settings is continued exactly, and any other is set aside with a warning.
    `data_hash` defaults to a SHA-256 over the volumes' values and their site names.
    `brain_mask`: a boolean mask on the volumes' grid (the template's brain mask); the site curve
    anchors (anchors.py) then count brain voxels only.
    `anchor_covariates`: name -> one value per volume (None or NaN: missing; categorical covariates as 0/1
    indicator columns): the site anchors are then every site's quantiles at the same covariate
    values (anchors.adjusted_site_quantiles), so a site's older population does not move its curve.
    `input_contract` (how the volumes were prepared) goes into the bundle's card.
    Under torchrun (WORLD_SIZE > 1) every process runs this; rank 0 writes the files.
    `on_step(trainer)` runs after every iteration (e.g. to snapshot the EMA weights).
    Returns the bundle directory.
    """
    check_site_labels(site_labels, site_names, config)
    context, device, created_group = init_distributed(resolve_device(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input sizes never change: let cuDNN pick its fastest kernels
    try:
        out_dir = Path(out_dir)
        work_dir = Path(work_dir) if work_dir is not None else out_dir / "training"
        work_dir.mkdir(parents=True, exist_ok=True)
        training_set, volume_hashes = training_volume_set(volumes, slice_axis)
        data_hash = data_hash or data_fingerprint(volume_hashes, site_labels, site_names)
        covariates = covariate_matrix(anchor_covariates, len(site_labels))
        if covariates is not None:  # other covariates, other anchors: a checkpoint must not mix them
            data_hash = hashlib.sha256(f"{data_hash}:{covariates.numpy().tobytes().hex()}".encode()).hexdigest()
        sampler = SliceSampler(
            training_set,
            site_labels,
            config,
            batch_size=train_config.batch_size,
            site_balanced=train_config.site_balanced,
            min_foreground=train_config.min_foreground,
            content_noise_std=train_config.content_noise_std,
            seed=train_config.seed,
            device=device,
            rank=context.rank,
            crop_size=train_config.crop_size,
        )
        mask = None if brain_mask is None else mask_slices_first(brain_mask, slice_axis, tuple(training_set.shape[1:]))
        split = validation_split(site_labels, train_config.validation_per_site)
        trainer = Trainer(
            config,
            train_config,
            sampler,
            device,
            context,
            brain_mask=mask,
            anchor_covariates=covariates,
            held_out=split.held_out,
        )
        checkpoint = work_dir / CHECKPOINT_NAME
        if resume and checkpoint.exists():
            trainer.resume_if_possible(checkpoint, data_hash)
        trainer.warm_up_curves()
        metrics = run_training(trainer, checkpoint, work_dir / LOG_NAME, data_hash, progress, on_step)
        if context.is_main:
            trainer.keep_best_snapshot()
            styles = bundle_styles(
                trainer.ema, sampler, trainer.curve_anchors, train_config.style_slices_per_site, train_config.batch_size
            )
            anchored = mask is not None and trainer.anchor_quantiles is not None  # each image's own map applies
            noise = site_noise(sampler, mask, site_names) if anchored else None
            save_bundle(
                out_dir,
                trainer.ema,
                site_names,
                styles,
                data_hash=data_hash,
                training={
                    **train_config.to_dict(),
                    **anchor_record(anchor_covariates, trainer.anchor_volumes),
                    **validation_record(trainer.validator, split, train_config),
                },
                seed=train_config.seed,
                site_signatures=site_signatures,
                site_quantiles=trainer.anchor_quantiles,
                site_noise=noise,
                metrics=metrics,
                input_contract=input_contract,
            )
        if context.world_size > 1:
            dist.barrier()
    finally:
        if created_group:
            dist.destroy_process_group()
    return out_dir
