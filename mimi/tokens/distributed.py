"""Scale-out of a token extraction over the processes of a `torchrun` launch.

`torchrun --nproc_per_node=N ... mimi tokens IN OUT` starts N processes with WORLD_SIZE,
RANK, LOCAL_RANK (and MASTER_ADDR/PORT) set. `join_workers` then initialises
`torch.distributed` (gloo when the model is on CPU, nccl when it is on a CUDA device), or
reuses a process group the caller already created. Without WORLD_SIZE > 1 everything runs in
this one process and the collectives are no-ops.

The extraction only exchanges small Python objects (file lengths, counts), so the process
group is only used for barriers and `all_gather_object`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from mimi.errors import MimiError

__all__ = ["Workers", "env_world_size", "join_workers", "local_device"]

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise MimiError(f"environment variable {name}={value!r} is not an integer") from None


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when unset): the number of processes of the launch."""
    return _env_int("WORLD_SIZE", 1)


def local_device(device: str | torch.device) -> torch.device:
    """The device this process should use: under torchrun, a bare ``cuda`` becomes
    ``cuda:LOCAL_RANK`` so each process of a node gets its own GPU."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and env_world_size() > 1:
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return dev


@dataclass(frozen=True)
class Workers:
    """This process's place in the launch.

    Attributes:
        rank: 0 .. world_size - 1.
        world_size: number of processes encoding into the same output folder.
        owns_group: this object created the process group (and `close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order (picklable Python objects)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def join_workers(device: torch.device) -> Workers:
    """Join the launch described by the environment (or the caller's process group)."""
    if dist.is_available() and dist.is_initialized():
        return Workers(dist.get_rank(), dist.get_world_size(), owns_group=False)
    world_size = env_world_size()
    if world_size <= 1:
        return Workers()
    if not dist.is_available():
        raise MimiError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = _env_int("RANK", -1)
    if not 0 <= rank < world_size:
        raise MimiError(f"WORLD_SIZE={world_size} but RANK is {os.environ.get('RANK')!r}; "
                        "launch with torchrun")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise MimiError(f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    return Workers(rank, world_size, owns_group=True)
