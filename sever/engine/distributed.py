"""Multi-process training through torchrun: process groups, rank 0's privileges, reductions.

`torchrun --nproc_per_node=N -m sever train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; a
plain `sever train` is a world of one, where every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from sever.errors import SeverError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA), if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend)
    return world


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over all processes (in place, and returned)."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_max(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def share(value: T, world: World) -> T:
    """Rank 0's value, on every rank (e.g. the run directory it created)."""
    if not world.distributed:
        return value
    box: list[T] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: T, world: World) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    values: list[T | None] = [None] * world.size
    dist.all_gather_object(values, value)
    return values  # type: ignore[return-value]  # each filled by its rank


def checked_on_main(check: Callable[[], T], world: World) -> T | None:
    """Run `check` on rank 0 alone (a probe, lock or write of what only rank 0 writes);
    whatever it raises stops every rank at once, where the others would wait for rank 0
    in their next collective until the process group's timeout: a SeverError is raised
    on every rank with its message, anything else is re-raised on rank 0 and a
    RuntimeError naming it on the others. Returns its value on rank 0, None elsewhere."""
    if not world.distributed:
        return check()
    result, failure = None, None
    if world.main:
        try:
            result = check()
        except Exception as exc:
            failure = exc
    # A SeverError travels whole (its type sets the exit code); anything else as its
    # message, since an arbitrary exception may not pickle.
    shared = share(
        failure if isinstance(failure, SeverError) or failure is None else describe(failure),
        world,
    )
    if failure is not None:
        raise failure
    if isinstance(shared, SeverError):
        raise shared
    if shared is not None:
        raise RuntimeError(f"rank 0 failed: {shared}")
    return result


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def sync_buffers(model: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics), which drift
    apart after the last training step, so all shards are validated by the same model
    and the reduced metrics equal a single-process evaluation of the saved checkpoint."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
