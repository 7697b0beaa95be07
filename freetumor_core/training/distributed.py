"""Processes under ``torchrun``: the process group, and the data shard of each rank."""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = ["ResumableSampler", "all_mean", "barrier", "setup_distributed"]


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``: joins the process group ``torchrun`` describes in
    ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` (NCCL on CUDA, gloo on the CPU), or uses the one the
    caller already joined; a plain process is rank 0 of 1.

    The group is joined once per process and left when the process exits: joining the same
    ``torchrun`` rendezvous a second time hangs, and a process may train several tasks in turn.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    atexit.register(_leave)
    return dist.get_rank(), dist.get_world_size()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean over ranks of each value (every rank must pass the same names)."""
    if not _active() or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[name] for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(names, tensor.tolist(), strict=True))


class ResumableSampler(DistributedSampler):
    """This rank's share of a shuffled epoch (seeded by ``seed`` and the epoch), from ``start`` on.

    ``set_epoch(epoch)`` fixes the order; ``start`` skips the samples a resumed run already saw, so
    the run continues with the same samples an uninterrupted one would draw.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
