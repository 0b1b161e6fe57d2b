"""Process-group helpers for data-parallel training under ``torchrun``.

``torchrun`` (or ``python -m torch.distributed.run``) sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` for every worker; ``init_from_environment`` reads them and joins the
process group (gloo on CPU, nccl on CUDA). Without them, or with ``WORLD_SIZE=1``, it returns a
single-process context whose collectives are no-ops, so the trainer has one code path.

The trainer keeps every rank bit-identical in what the alternating algorithm needs to agree on: each
rank sees the same global batch order and draws the same augmentation parameters (same seed), takes its
contiguous slice of the batch, and all collectives here are deterministic sums in rank order.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import TcdcnError
from ..models.network import TCDCN

# Environment variables torchrun sets for each worker; all are needed when WORLD_SIZE > 1.
REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# How long a rank waits for the others (rendezvous, collectives) before giving up.
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(TcdcnError):
    """A distributed launch that is misconfigured, or ranks whose state diverged."""


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous ``[start, stop)`` of ``range(n)`` rank ``rank`` takes; sizes differ by at most one."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def default_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for launching a local process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class DistributedContext:
    """This process's place in the process group; ``world_size == 1`` means no group at all."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    owns_group: bool = False  # True when init_from_environment created the group (and must destroy it)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, history and logs."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        return shard_bounds(n, self.rank, self.world_size)

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks of a float array (float64; the input on a single process)."""
        local = np.asarray(values, dtype=np.float64)
        if not self.is_distributed:
            return local.copy()
        # Gathered then summed in rank order, so every rank gets the bit-identical result.
        return np.sum(np.stack(self.all_gather(local)), axis=0)

    def all_gather(self, array: np.ndarray) -> list[np.ndarray]:
        """Every rank's array (shapes may differ), in rank order."""
        if not self.is_distributed:
            return [np.asarray(array)]
        gathered: list[np.ndarray | None] = [None] * self.world_size
        dist.all_gather_object(gathered, np.asarray(array))
        return [np.asarray(g) for g in gathered]

    def assert_same(self, name: str, values: np.ndarray | torch.Tensor, tolerance: float = 0.0) -> None:
        """Raise ``DistributedError`` unless every rank holds ``values`` within ``tolerance`` (max abs)."""
        if not self.is_distributed:
            return
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().to(torch.float64).numpy()
        gathered = self.all_gather(np.asarray(values, dtype=np.float64))
        reference = gathered[0]
        for rank, other in enumerate(gathered[1:], start=1):
            if other.shape != reference.shape:
                raise DistributedError(f"rank {rank} disagrees with rank 0 on {name}: shape {other.shape} "
                                       f"!= {reference.shape}")
            gap = float(np.max(np.abs(other - reference))) if other.size else 0.0
            if not gap <= tolerance:
                raise DistributedError(f"rank {rank} disagrees with rank 0 on {name} (max difference {gap:.3g})")

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


def _env_int(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def init_from_environment(device: torch.device | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
                          ) -> DistributedContext:
    """Join the process group torchrun describes in the environment; single-process when there is none."""
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") <= 1:
        return DistributedContext()
    missing = [k for k in REQUIRED_ENV if k not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE>1 but {', '.join(missing)} not set (launch with torchrun)")
    world_size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK={rank} outside 0..{world_size - 1}")
    backend = default_backend(device or torch.device("cpu"))
    if dist.is_initialized():
        # Someone (a launcher, a notebook) set the group up already: use it, leave its teardown to them.
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise DistributedError("an existing process group disagrees with RANK/WORLD_SIZE")
        return DistributedContext(rank, world_size, local_rank, dist.get_backend(), owns_group=False)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return DistributedContext(rank, world_size, local_rank, backend, owns_group=True)


class DataParallelView:
    """The model's interface for ``tcdcn_objective`` with the forward pass through DDP.

    DDP averages the gradients of the parameters used in its forward; the penalty terms read the
    filters and head through the wrapped module in the same backward pass, so their gradients are
    averaged with the rest.
    """

    def __init__(self, ddp: DistributedDataParallel) -> None:
        self.ddp = ddp
        self.module: TCDCN = ddp.module

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ddp(images)

    def filters(self) -> list[torch.Tensor]:
        return self.module.filters()

    def head_weight(self) -> torch.Tensor:
        return self.module.head_weight()


def parameter_fingerprint(model: torch.nn.Module) -> np.ndarray:
    """Per-tensor sum and sum of squares (float64): equal on ranks that hold equal parameters."""
    stats = [(p.detach().double().sum().item(), p.detach().double().pow(2).sum().item())
             for p in model.parameters()]
    return np.asarray(stats, dtype=np.float64).reshape(-1)
