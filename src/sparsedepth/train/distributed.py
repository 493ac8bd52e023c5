"""Data parallelism through torchrun: process group setup, device choice and small collectives.

``torchrun --nproc_per_node N -m sparsedepth.cli train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; with
WORLD_SIZE > 1 the process group is created here (NCCL on CUDA, gloo on CPU) unless the caller already did.
Each rank draws its rows of the global batch with ``get_batch(..., rank, world_size)``; DDP averages the
gradients; losses and telemetry are all-reduced (mean); only rank 0 writes files.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as tdist

T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit cuda without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU; use device=cpu or auto")
    return torch.device(name)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
            t /= self.world_size
        return t

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (e.g. tokenise once, then everyone loads the cache)."""
        if self.is_main:
            out = fn()
        self.barrier()
        if not self.is_main:
            out = fn()
        return out

    def close(self) -> None:
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()


def init_distributed(device: str = "auto", group_of_one: bool = False) -> Dist:
    """Describe this process: rank, world size and device; joins the process group when WORLD_SIZE > 1.

    ``group_of_one``: alone, still create a process group of one (in memory, no rendezvous): FSDP2 and
    torch.distributed.checkpoint then run the same code on one process as on many."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if tdist.is_available() and tdist.is_initialized():
        world = tdist.get_world_size()
    if world <= 1 and not (group_of_one and not tdist.is_initialized()):
        return Dist(device=resolve_device(device))
    if world <= 1:
        dev = resolve_device(device)
        tdist.init_process_group("cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo", store=tdist.HashStore(),
                                 rank=0, world_size=1)
        return Dist(0, 1, 0, dev, owns_group=True)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = False
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, owns)


@contextmanager
def maybe_no_sync(model: torch.nn.Module, skip: bool) -> Iterator[None]:
    """DDP's ``no_sync`` for all but the last micro-batch (gradients all-reduced once per step)."""
    if skip and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield
