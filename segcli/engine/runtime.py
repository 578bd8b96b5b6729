"""Run-time services for the engine: device choice, seeding and RNG state, progress bars, console.

Progress bars are drawn only on a terminal and never with ``quiet``; library code below the
engine never prints.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from segcli.errors import SegcliError

__all__ = [
    "EpochProgress",
    "check_writable_folder",
    "console",
    "progress_bar",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "set_quiet",
    "set_rng_state",
    "track",
]

T = TypeVar("T")

_state = {"quiet": False}
# Off a terminal (pipes, files, CI logs) tables get room instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 160)
console = Console(stderr=False, highlight=False, soft_wrap=True, emoji=False, width=_WIDTH)


def set_quiet(quiet: bool) -> None:
    """Silence progress bars (and informational console output) for the rest of the process."""
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def show_progress() -> bool:
    """Bars only on an interactive terminal, and not with ``--quiet``."""
    return not _state["quiet"] and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def info(message: str) -> None:
    """An informational line on stdout (suppressed by ``--quiet``)."""
    if not _state["quiet"]:
        console.print(message)


def progress_bar(transient: bool = False) -> Progress:
    """A rich Progress with count, bar, elapsed and ETA; disabled off-terminal or when quiet."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not show_progress(),
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (a no-op wrapper when bars are off)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as bar:
        task = bar.add_task(description, total=total, status="")
        for item in items:
            yield item
            bar.advance(task)


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; validate explicit choices.

    Raises:
        SegcliError: CUDA (or MPS) asked for but not available, or an unknown device string.
    """
    import torch

    choice = (device or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegcliError(
                f"--device {device}: CUDA is not available on this machine "
                "(no GPU or a CPU-only torch); use --device cpu or --device auto"
            )
        if ":" in choice:
            index = choice.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise SegcliError(
                    f"--device {device}: no such GPU; this machine has "
                    f"{torch.cuda.device_count()} (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
                )
        return choice
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SegcliError("--device mps: Apple MPS is not available on this machine")
        return choice
    if choice == "cpu":
        return choice
    raise SegcliError(f"--device {device}: unknown device; use auto, cpu, cuda or cuda:N")


def check_writable_folder(folder: str | os.PathLike[str], option: str = "--output") -> None:
    """Raise unless ``folder`` exists as a writable folder or could be created; creates nothing.

    Called before long work so that an output path under a regular file (or in a read-only
    place) fails at once, not after hours of computing.

    Raises:
        SegcliError: ``folder`` or one of its parents is a file, or the nearest existing parent
            is not writable; the message names the path and ``option``.
    """
    from pathlib import Path

    path = Path(folder).absolute()
    for parent in (path, *path.parents):
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                raise SegcliError(
                    f"{path}: cannot write here ({parent} is not writable); choose another {option}"
                )
            return
        if parent.exists() or parent.is_symlink():
            raise SegcliError(
                f"{path}: cannot write here ({parent} is a file, not a folder); choose another "
                f"{option}"
            )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (and CUDA) RNG states, as tensors and plain data only.

    NumPy's key array is stored as an int64 tensor so the result loads with
    ``torch.load(..., weights_only=True)``; :func:`set_rng_state` restores it.
    """
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is available)."""
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochProgress:
    """A rich bar per training epoch (iteration, loss, samples/s, ETA); silent off-terminal."""

    def __init__(self, epoch: int, epochs: int, iterations: int) -> None:
        self.enabled = show_progress()
        self.progress = Progress(
            TextColumn(f"[bold]epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} samples/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.enabled,
        )
        self.task = self.progress.add_task("train", total=iterations, loss=math.nan, rate=0.0)
        self.start = time.perf_counter()
        self.samples = 0

    def __enter__(self) -> EpochProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, loss: float, batch: int) -> None:
        """One optimisation step of ``batch`` samples with ``loss``."""
        self.samples += batch
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=1, loss=loss, rate=rate)
