"""DDP set-up from torchrun's environment: gloo on CPU, NCCL on CUDA, rank 0 writes files."""

from __future__ import annotations

import datetime
import os
import signal
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_peers: tuple[int, ...] = ()  # pids of the other ranks on this host

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str, *, timeout_s: float = 1800) -> DistInfo:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    ids = [None] * world
    dist.all_gather_object(ids, (socket.gethostname(), os.getpid()))
    peers = tuple(pid for host, pid in ids if host == socket.gethostname() and pid != os.getpid())
    return DistInfo(rank, world, local, peers)


def kill_local_peers(info: DistInfo) -> None:
    """SIGKILL the other ranks on this host, after a collective failed or timed out.

    torchrun stops the remaining workers with SIGTERM and waits 30 s before SIGKILL (its
    ``--shutdown-timeout`` is not applied on that path in torch 2.14); a rank that hangs (stopped,
    deadlocked in a kernel) never handles SIGTERM, so the job would linger. The job is failing
    anyway; this makes it end within the process-group timeout plus a second.
    """
    for pid in info.local_peers:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_ranks(flag: bool, device: torch.device | str, op: str) -> bool:
    """``flag`` combined over DDP ranks (min: all true; max: any true); the flag itself on one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    return bool(t.item())


def any_rank(*flags: torch.Tensor | bool, device: torch.device | str) -> list[bool]:
    """Each flag OR-ed over DDP ranks, all in one all-reduce and read with one host sync (a training
    step's non-finite check and stop request together); the flags themselves on one process."""
    t = torch.stack([torch.as_tensor(f, dtype=torch.float32, device=device).reshape(()) for f in flags])
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def is_distributed() -> bool:
    """Whether a process group is running (torchrun with several processes)."""
    return dist.is_available() and dist.is_initialized()


def current_rank() -> int:
    """This process's rank in the process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
