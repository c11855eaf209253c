"""Checkpoints: what an exact resume needs, and deciding whether a checkpoint can be resumed.

A checkpoint records the step, every network and optimiser state, each rank's random states,
and what it was trained for: the data fingerprint, the model and training settings and the
number of processes. Training continues from a checkpoint only when all of these match; when
any differs, it starts afresh, says what changed, and keeps the old file beside the new one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

LOGGER = logging.getLogger("bids_harmonize")
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.previous.pt"


def checkpoint_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint and this run, in words (empty: it can be resumed).

    `current` holds data_hash, n_volumes, model_config, train_config and world_size."""
    changes = []
    if saved.get("data_hash") != current["data_hash"]:
        changes.append(f"other training data ({saved.get('n_volumes', '?')} volumes then, {current['n_volumes']} now)")
    for part, label in (("model_config", "model setting"), ("train_config", "training setting")):
        before, after = saved.get(part, {}), current[part]
        changes += [
            f"{label} {name}: {before.get(name)!r} -> {after.get(name)!r}"
            for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)
        ]
    ranks = len(saved.get("per_rank", []))
    if ranks != current["world_size"]:
        changes.append(f"{ranks} training process(es) then, {current['world_size']} now")
    return changes


def load_if_resumable(path: Path, current: dict[str, Any], is_main: bool) -> dict[str, Any] | None:
    """The checkpoint's state when this run can continue it; else None, after saying why and
    moving the old checkpoint to checkpoint.previous.pt (rank 0 only; all ranks must call)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    changes = checkpoint_changes(state, current)
    if current["world_size"] > 1:
        dist.barrier()  # every rank has read the file before rank 0 moves it
    if not changes:
        if is_main:
            LOGGER.info(
                "resuming training at step %d of %d from %s", state["step"], current["train_config"]["iterations"], path
            )
        return state
    if is_main:
        previous = path.with_name(PREVIOUS_NAME)
        os.replace(path, previous)
        LOGGER.warning(
            "%s cannot be continued: %s. Starting training afresh (the old checkpoint is now %s).",
            path,
            "; ".join(changes),
            previous,
        )
    return None


def global_rng_state() -> dict[str, Any]:
    """Global torch (CPU and CUDA) and numpy RNG states, in types torch.load(weights_only) accepts."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_pos": numpy_state["state"]["pos"],
        "numpy_has_gauss": numpy_state["has_gauss"],
        "numpy_gauss": numpy_state["gauss"],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": state["numpy_pos"]},
            "has_gauss": state["numpy_has_gauss"],
            "gauss": state["numpy_gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
