"""Small helpers shared by the model modules: device choice, autocast and dataclass <-> JSON."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, TypeVar

import torch

from bids_harmonize.errors import ExitCode, HarmonizeError

T = TypeVar("T")


class DeviceUnavailable(HarmonizeError, RuntimeError):
    """A GPU was asked for but torch sees none; the message says how to expose one."""

    exit_code = ExitCode.FAILURE


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into a device, failing fast when CUDA is absent.

    An asked-for GPU that is not there is an error, never a silent CPU fallback: a job that
    expects minutes on a GPU would otherwise run for days on a CPU.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device {str(device)!r} was asked for but torch sees no CUDA GPU; run the container "
            "with `--gpus all` (Docker) or `--nv` (Apptainer/Singularity), or pass --device cpu"
        )
    return resolved


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def without_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Leave the autocast region opened by `autocast_for`, for ops that need fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", enabled=False)
    return contextlib.nullcontext()


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a flat dataclass from a JSON dict, rejecting keys it does not know.

    Unknown keys are an error rather than ignored, so a typo in a config file is caught.
    """
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**data)
