"""DDP set-up shared by the trainers: one process per GPU under ``torchrun``, or a plain
single process. On the CPU the gloo backend runs the same code (used by the tests)."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from animegan.device import pick_device


WAIT_S = 2 * 3600  # how long a rank waits for the others at a collective before giving up


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """How many processes torchrun started for this run (``WORLD_SIZE``); 1 for a plain process."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str | None = None) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else run alone."""
    world = launched_world_size()
    if world <= 1:
        return Dist(device=pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and device in (None, "", "auto", "cuda"):
        torch.cuda.set_device(local)
        dev, backend = torch.device("cuda", local), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    # The other ranks wait at a barrier while the main one evaluates or samples; the first evaluation
    # also measures the whole anime set (minutes on a CPU), which could pass the defaults (NCCL's
    # 10 minutes, gloo's 30).
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=WAIT_S))
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean of a tensor across processes (for logging)."""
    if not d.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / d.world_size


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
