"""Distributed training context: one process per device, launched by `torchrun`.

`torchrun --nproc-per-node N -m wsolbench run ...` (or `wsolbench run --nproc-per-node N`,
which re-launches itself under torchrun) sets RANK / WORLD_SIZE / LOCAL_RANK; `init` reads
them and joins the process group: NCCL on CUDA, gloo on CPU (so it is tested here). Without
those variables everything is a world of one and no process group is created.

Rules the engine follows with a `DistContext`:
- each rank reads a disjoint shard of every epoch's permutation (`DistributedSampler`,
  reseeded per epoch), with `global batch / world size` images per step, and DDP averages
  the gradients, so a step sees the same global batch as one process would;
- only rank 0 writes checkpoints, MLflow and results (`is_main`);
- evaluation is sharded over ranks and merged through the protocols' `merge` (exact).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from wsolbench.errors import WsolbenchError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list) -> list:
        """This rank's strided share of `items` (rank r gets items r, r + W, r + 2W, ...)."""
        return items[self.rank::self.world_size]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (a world of one: `[obj]`)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def unshard(shards: list[list]) -> list:
    """Inverse of `DistContext.shard`: interleave per-rank lists back into the original order."""
    total = sum(len(s) for s in shards)
    world = len(shards)
    return [shards[i % world][i // world] for i in range(total)]


def init(device: str) -> DistContext:
    """Join the torchrun process group if launched by torchrun; else a world of one."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext()
    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                      local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            if not torch.cuda.is_available():
                raise WsolbenchError("--device cuda under torchrun, but CUDA is unavailable")
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx


def device_for(ctx: DistContext, device: str) -> str:
    """Under torchrun on CUDA each rank drives its own GPU (`cuda:<local rank>`)."""
    if ctx.enabled and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class EpochShardSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """One seeded permutation per epoch, split across ranks; yields `(index, epoch_seed)`.

    Every rank draws the same permutation of `range(n)` from the epoch seed, pads it (by
    wrapping) to a multiple of `world_size`, and takes every `world_size`-th entry from its
    rank. With a per-rank batch of `B / world_size`, step k of all ranks together covers
    exactly the images one process with batch `B` sees at step k (when `n` is a multiple of
    the world size). The seed travels with each index so `RecordDataset` can seed the
    image's augmentation (also inside persistent DataLoader workers). Call `set_epoch_seed`
    before each epoch.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size
        self.per_rank = -(-n // world_size)  # ceil
        self.epoch_seed = 0

    def set_epoch_seed(self, seed: int) -> None:
        self.epoch_seed = seed

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch_seed))
        repeats = -(-self.per_rank * self.world_size // max(self.n, 1))
        padded = order.repeat(repeats)[:self.per_rank * self.world_size]
        return iter((i, self.epoch_seed) for i in padded[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
