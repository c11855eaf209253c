"""Where this process stands in a torchrun job: rank, world size, and its device.

`torchrun --nproc_per_node=N` (or `bids_harmonize ... group --train-processes N`) starts N
processes with WORLD_SIZE/RANK/LOCAL_RANK set; each joins one process group (NCCL on GPUs,
gloo on CPU) and trains on its own device with DistributedDataParallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistributedContext, torch.device, bool]:
    """Join the torchrun job described by WORLD_SIZE/RANK/LOCAL_RANK, if any.

    Returns the context, this process's device (cuda:LOCAL_RANK under torchrun on GPUs) and
    whether this call created the process group (and so should destroy it).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext(), device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size()), device, created
