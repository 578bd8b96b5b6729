"""One process per device under ``torchrun``: process group, rank-0 output, collectives.

    $ torchrun --nproc_per_node=4 -m segcli train exp.yaml

    >>> from segcli.engine import distributed
    >>> with distributed.session("auto") as ctx:          # ctx.device: cuda:LOCAL_RANK or cpu
    ...     mine = distributed.shard(cases)               # cases[rank::world]
    ...     parts = distributed.all_gather_object(work(mine))
    ...     if ctx.is_main:
    ...         write(parts)

``torchrun`` (``python -m torch.distributed.run``) starts the processes and sets ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.  :func:`session` reads them,
joins the process group (NCCL when the device is CUDA, gloo otherwise), picks this process's
device (``cuda`` → ``cuda:LOCAL_RANK``), silences console output on every rank but 0 and leaves
the group at the end.  Without those variables, or with ``WORLD_SIZE=1``, it is rank 0 of 1 and
every helper here is a no-op, so the engine runs the same code with and without torchrun.  A
process group set up by the caller (``torch.distributed.init_process_group``) is used as it is
and left open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from segcli.engine.runtime import is_quiet, resolve_device, set_quiet
from segcli.errors import SegcliError

__all__ = [
    "Context",
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "is_main",
    "launch_env",
    "local_world_size",
    "rank",
    "raise_first",
    "session",
    "shard",
    "world_size",
    "wrap_model",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process stands.

    Attributes:
        rank: global rank, 0 … world_size − 1.
        world_size: number of processes (1 without torchrun).
        local_rank: rank on this node (picks the GPU).
        device: this process's device (``cuda:LOCAL_RANK`` for ``cuda`` under torchrun).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise SegcliError(
            f"environment variable {name}={value!r} is not an integer; launch segcli with "
            "torchrun (which sets WORLD_SIZE, RANK and LOCAL_RANK) or unset it"
        ) from None


def launch_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's variables, None when not launched.

    Raises:
        SegcliError: ``WORLD_SIZE`` > 1 without a valid ``RANK`` (not started by torchrun).
    """
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return None
    rank_ = _env_int("RANK")
    if rank_ is None or not 0 <= rank_ < world:
        raise SegcliError(
            f"WORLD_SIZE is {world} but RANK is {os.environ.get('RANK')!r}; start the processes "
            "with torchrun, e.g. torchrun --nproc_per_node=2 -m segcli train EXP.yaml"
        )
    local = _env_int("LOCAL_RANK")
    return rank_, world, rank_ if local is None else local


def _rank_device(device: str, local_rank: int, world: int) -> str:
    """This rank's device: ``auto``/``cuda`` → ``cuda:LOCAL_RANK`` (one GPU per process)."""
    choice = (device or "auto").strip().lower()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda:") and world > 1:
        raise SegcliError(
            f"--device {device} puts all {world} torchrun processes on one GPU; use --device "
            "cuda (process LOCAL_RANK takes cuda:LOCAL_RANK) and limit the GPUs with "
            "CUDA_VISIBLE_DEVICES"
        )
    if choice == "cuda":
        resolve_device("cuda")  # the clear error when there is no CUDA
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise SegcliError(
                f"LOCAL_RANK {local_rank} needs cuda:{local_rank} but this node has {count} "
                f"GPU(s); use torchrun --nproc_per_node={count} (or fewer)"
            )
        choice = f"cuda:{local_rank}"
    return resolve_device(choice)


@contextmanager
def session(device: str = "auto") -> Iterator[Context]:
    """Join torchrun's process group for the duration of a command.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` (→ ``cuda:LOCAL_RANK``), ``mps``; ``cuda:N`` only
            without torchrun (one process).

    Yields:
        The :class:`Context` (rank, world size, device).  Ranks other than 0 are made quiet
        (:func:`segcli.engine.runtime.set_quiet`): for the rest of the process under torchrun
        (so the CLI's own summary lines come from rank 0 alone), until the block ends in a
        caller's process group.

    Raises:
        SegcliError: an unusable device, or torchrun variables that do not add up.
    """
    if dist.is_available() and dist.is_initialized():  # the caller's group: use it, keep it
        world = dist.get_world_size()
        rank_ = dist.get_rank()
        local = _env_int("LOCAL_RANK")
        local = rank_ if local is None else local
        ctx = Context(rank_, world, local, _rank_device(device, local, world))
        owner = False  # also restores quietness: the process may go on alone
    else:
        launched = launch_env()
        if launched is None:
            yield Context(device=resolve_device(device))
            return
        rank_, world, local = launched
        ctx = Context(rank_, world, local, _rank_device(device, local, world))
        if ctx.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(ctx.device))
        try:
            dist.init_process_group("nccl" if ctx.device.startswith("cuda") else "gloo")
        except ValueError as exc:  # e.g. WORLD_SIZE set by hand, MASTER_ADDR missing
            raise SegcliError(
                f"cannot join the process group of {world} processes ({exc}); start segcli with "
                "torchrun, e.g. torchrun --nproc_per_node=2 -m segcli train EXP.yaml"
            ) from None
        owner = True
    was_quiet = is_quiet()
    if not ctx.is_main:
        set_quiet(True)
    try:
        yield ctx
    finally:
        if not owner:
            set_quiet(was_quiet)
        if owner and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- queries


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (also true outside a process group)."""
    return rank() == 0


def local_world_size() -> int:
    """Processes on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    if not _active():
        return 1
    return max(1, _env_int("LOCAL_WORLD_SIZE") or 1)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share ``items[rank::world]``: every item goes to exactly one rank.

    Round robin keeps the shares within one item of each other, and sorted inputs (case
    names) give every rank a similar mix.  Some ranks get nothing when there are fewer
    items than ranks.
    """
    return list(items[rank() :: world_size()])


# --------------------------------------------------------------------------- collectives


def barrier() -> None:
    """Wait until every rank gets here (no-op without a process group)."""
    if not _active():
        return
    if dist.get_backend() == "nccl":  # name the device: NCCL would otherwise guess it
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64), the same on every rank."""
    if not _active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    tensor = tensor.to(_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` alone."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def raise_first(errors: Sequence[BaseException | None]) -> None:
    """Raise the first non-None error of a gathered list (on every rank alike).

    The pattern for work that may fail on one rank: catch the error, gather it with the
    results, then every rank raises the same error instead of the others waiting forever in
    the next collective.
    """
    for error in errors:
        if error is not None:
            raise error


# --------------------------------------------------------------------------- models


def wrap_model(model: nn.Module, device: str) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else unchanged.

    On CUDA, BatchNorm layers become ``SyncBatchNorm`` first (statistics over the global
    batch, as in one process; same parameter and buffer names, so checkpoints load into the
    plain network).  On CPU (gloo) BatchNorm statistics stay per rank.  Gradients are averaged
    over the ranks in ``backward``; the wrapper's ``.module`` is ``model``.
    """
    if not _active():
        return model
    if device.startswith("cuda"):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        index = torch.device(device).index
        return nn.parallel.DistributedDataParallel(model, device_ids=[index], output_device=index)
    return nn.parallel.DistributedDataParallel(model)
