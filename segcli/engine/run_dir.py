"""The run folder of ``segcli train`` (SPEC.md, "Run folder"): files, log.csv and curves.png.

runs/<name>/config.yaml          the resolved spec
runs/<name>/split.json           the train/validation case split
runs/<name>/checkpoint_last.pt   every epoch (resumable)
runs/<name>/checkpoint_best.pt   best mean validation Dice
runs/<name>/log.csv              epoch,train_loss,val_loss,val_dice,lr,seconds
runs/<name>/curves.png           loss and Dice per epoch
runs/<name>/normalization.json   ct_auto's dataset statistics (when used)
runs/<name>/spacing.json         the resolved data.spacing (when resampling)
runs/<name>/.lock                held (flock) by the training process while it runs

Every write into the run folder goes through :class:`RunDir` and is atomic.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segcli.atomic import atomic_open
from segcli.engine.runtime import check_writable_folder
from segcli.errors import Interrupted, SegcliError

if TYPE_CHECKING:
    from segcli.config import Experiment
    from segcli.io.checkpoint import Checkpoint

__all__ = [
    "LOG_COLUMNS",
    "RunDir",
    "TrainPosition",
    "atomic_write_text",
    "read_log",
    "write_log",
]

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename."""
    with atomic_open(path, "w", error=SegcliError) as handle:
        handle.write(text)


@dataclass
class RunDir:
    """Paths of one run folder."""

    path: Path
    config: Path = field(init=False)
    split: Path = field(init=False)
    last: Path = field(init=False)
    best: Path = field(init=False)
    log: Path = field(init=False)
    curves: Path = field(init=False)
    stats: Path = field(init=False)
    spacing: Path = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.config = self.path / "config.yaml"
        self.split = self.path / "split.json"
        self.last = self.path / "checkpoint_last.pt"
        self.best = self.path / "checkpoint_best.pt"
        self.log = self.path / "log.csv"
        self.curves = self.path / "curves.png"
        self.stats = self.path / "normalization.json"
        self.spacing = self.path / "spacing.json"

    def check_start(self, resume: bool) -> None:
        """Before loading any data: a new run needs an empty, writable folder; a resumed run
        needs its checkpoint_last.pt.

        Raises:
            SegcliError: naming the folder and the fix (--resume, or another --output).
        """
        if resume:
            if not self.last.is_file():
                raise SegcliError(
                    f"{self.last}: nothing to resume (no checkpoint_last.pt in {self.path}); "
                    "start without --resume"
                )
        elif self.last.is_file():
            raise SegcliError(
                f"{self.path}: already holds a training run (checkpoint_last.pt); use --resume "
                "to continue it, or --output / --set name=... for a new run"
            )
        else:  # an unwritable run folder fails at once
            check_writable_folder(self.path, "--output (or output / name in the spec)")

    def write_split(self, train: list[str], val: list[str]) -> None:
        atomic_write_text(self.split, json.dumps({"train": train, "val": val}, indent=1) + "\n")

    def write_start(
        self,
        exp: Experiment,
        train: list[str],
        val: list[str],
        stats: dict[str, Any] | None,
        spacing: tuple[float, ...] | None,
    ) -> None:
        """What a new run writes before its first epoch: config.yaml, split.json and, when
        used, normalization.json (ct_auto statistics) and spacing.json (resolved spacing)."""
        from segcli.config import dump

        atomic_write_text(self.config, dump(exp))
        self.write_split(train, val)
        if stats is not None:
            atomic_write_text(self.stats, json.dumps(stats, indent=1) + "\n")
        if spacing is not None:
            atomic_write_text(self.spacing, json.dumps({"spacing": list(spacing)}) + "\n")

    def save_checkpoint(self, checkpoint: Checkpoint, best: bool) -> None:
        """checkpoint_best.pt (if ``best``), then checkpoint_last.pt: a kill between the two
        keeps best consistent, and resume reads the log rows from checkpoint_last.pt."""
        if best:
            checkpoint.save(self.best)
        checkpoint.save(self.last)

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite log.csv whole (see :func:`write_log`)."""
        write_log(self.log, rows)

    def plot_curves(self, rows: list[dict[str, Any]], title: str = "") -> None:
        """Redraw curves.png (see :func:`plot_curves`)."""
        plot_curves(self.curves, rows, title=title)

    @contextlib.contextmanager
    def lock(self, enabled: bool = True) -> Iterator[None]:
        """Hold the run folder for one training process: a second one is refused at once.

        An exclusive, non-blocking ``flock`` on ``<run>/.lock``, which holds the holder's PID
        for the message.  The operating system drops the lock when the holder exits or
        crashes, so a stale ``.lock`` file (a killed run) never blocks the next one.  On
        exit the lock file is removed, and so is the run folder when this call created it
        and nothing else was written there (a run that failed early leaves no trace).

        Args:
            enabled: False to do nothing (the non-main ranks of a torchrun job share rank 0's
                folder and lock).

        Raises:
            SegcliError: another live process holds the folder (names the folder and its PID),
                or the folder cannot be created.
        """
        if not enabled:
            yield
            return
        check_writable_folder(self.path, "--output (or output / name in the spec)")
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SegcliError(f"{self.path}: cannot create the run folder ({exc})") from None
        handle = _acquire(self.path / ".lock")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                (self.path / ".lock").unlink()
            handle.close()  # releases the lock
            if created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # only succeeds when empty


@dataclass
class TrainPosition:
    """Where a training loop is, for the message of an interrupted run (``segcli.engine.train``)."""

    run: RunDir | None = None
    epochs: int = 0
    epoch: int | None = None  # 0-based epoch in progress
    saved: int = 0  # complete epochs in checkpoint_last.pt

    def interrupted(self) -> Interrupted:
        assert self.run is not None and self.epoch is not None
        done = self.saved > self.epoch  # the interrupt came after this epoch was saved
        where = f"interrupted {'after' if done else 'at'} epoch {self.epoch + 1}/{self.epochs}"
        if self.saved == 0:
            return Interrupted(
                f"{where}; no epoch was complete, so nothing was saved in {self.run.path}"
            )
        return Interrupted(
            f"{where}; {self.run.last} keeps the {self.saved} complete epoch(s)", resumable=True
        )


def _acquire(path: Path) -> io.TextIOWrapper:
    """Open ``path`` and take an exclusive flock on it (the file stays open: the lock)."""
    import fcntl

    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise SegcliError(
                f"{path.parent}: another segcli train (PID {pid}) is using this run folder; "
                "wait for it to finish, or use --output / --set name=... for a new run"
            ) from None
        # the holder before us may have removed the file between our open and our flock:
        # then we locked an orphan, and must lock the file that is there now
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite log.csv whole (atomically), so a kill never leaves a half row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row[c]) for c in LOG_COLUMNS])
    atomic_write_text(path, buffer.getvalue())


def read_log(path: Path) -> list[dict[str, float]]:
    """Rows of a log.csv as floats (empty cells → NaN); [] when the file does not exist."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {k: (float(v) if v != "" else math.nan) for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]


def plot_curves(path: Path, rows: list[dict[str, Any]], title: str = "") -> None:
    """Loss (train and validation) and validation Dice per epoch, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in rows]  # 1-based, as the console counts
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss", ms=3)
    val = [(r["epoch"], r["val_loss"]) for r in rows if not math.isnan(r["val_loss"])]
    if val:
        ax_loss.plot(
            [e + 1 for e, _ in val], [v for _, v in val], "s-", label="validation loss", ms=3
        )
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    dice = [(r["epoch"], r["val_dice"]) for r in rows if not math.isnan(r["val_dice"])]
    if dice:
        ax_dice.plot([e + 1 for e, _ in dice], [v for _, v in dice], "o-", color="tab:green", ms=3)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("mean validation Dice")
    ax_dice.set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_dice):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_dice.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb", error=SegcliError, what="the curves") as handle:
            fig.savefig(handle, format="png", dpi=100)
    finally:
        plt.close(fig)
