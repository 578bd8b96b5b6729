"""``segcli train``: patch-based training with validation, checkpoints, resume and curves.

    >>> from segcli.config import load
    >>> from segcli.engine.train import fit
    >>> result = fit(load("experiments/toy-dilated.yaml", ["train.epochs=2"]), device="cpu")
    >>> result.best_dice, result.run_dir

The loop is a handful of functions (build, train one epoch, validate, save) rather than a class
with hidden state.  Reproducibility: every patch is drawn from a generator seeded by
(seed, epoch, index), so the same spec and seed give the same log.csv on CPU whatever the number
of DataLoader workers, and ``--resume`` continues exactly where the last complete epoch ended.

Under torchrun (``torchrun --nproc_per_node=N -m segcli train``) every process trains a
DistributedDataParallel copy on its own patches (``train.batch_size`` per process), validation
is split across the processes, and rank 0 alone writes the run folder (docs/distributed.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segcli import __version__
from segcli.config import Experiment
from segcli.engine import distributed
from segcli.engine.execution import Execution, announce_precision, prepare_model
from segcli.engine.init_from import InitReport, load_initial_weights
from segcli.engine.optim import build_optimizer, lr_factor
from segcli.engine.run_dir import RunDir, TrainPosition, read_log
from segcli.engine.runtime import (
    EpochProgress,
    info,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from segcli.engine.train_data import load_train_data, patch_loader
from segcli.engine.validation import check_validation_size, validate
from segcli.errors import Interrupted, SegcliError
from segcli.io.checkpoint import Checkpoint, check_compatible
from segcli.losses import experiment_loss
from segcli.losses.deep_supervision import compute_loss, loss_target
from segcli.precision import float32_output

__all__ = ["TrainResult", "fit", "lr_factor"]


@dataclass
class TrainResult:
    run_dir: Path
    epochs_run: int
    best_dice: float
    best_epoch: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: seconds the loop waited for the next batch / spent computing (for bench/train.py)
    data_seconds: float = 0.0
    compute_seconds: float = 0.0
    iterations: int = 0
    #: the precision the network trained in (fp32, bf16 or fp16; segcli.precision)
    precision: str = "fp32"


def fit(
    exp: Experiment,
    run_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``exp``; write the run folder; return the result.

    Every epoch ends with ``checkpoint_last.pt`` (holding the log rows too) written atomically,
    so a run killed at any moment loses at most the epoch in progress and ``resume=True``
    continues it with every epoch logged exactly once.

    Raises:
        SegcliError: bad data, an existing run without ``resume``, an incompatible checkpoint.
        Interrupted: Ctrl-C during the epochs (a ``KeyboardInterrupt`` saying which epoch was
            interrupted and whether ``checkpoint_last.pt`` can be resumed).
    """
    position = TrainPosition()
    with distributed.session(device) as ctx:  # torchrun: one process per device
        run = RunDir(Path(run_dir) if run_dir is not None else exp.run_folder)
        try:
            with run.lock(enabled=distributed.is_main()):  # a second train here is refused
                return _fit(exp, run_dir, ctx.device, resume, on_epoch_end, position)
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted) or position.epoch is None:
                raise
            raise position.interrupted() from None


def _fit(
    exp: Experiment,
    run_dir: str | Path | None,
    device: str,
    resume: bool,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
    position: TrainPosition,
) -> TrainResult:
    from segcli.models import build, check_input_size

    device = resolve_device(device)
    run = RunDir(Path(run_dir) if run_dir is not None else exp.run_folder)
    run.check_start(resume)
    # torchrun: every rank checked the folder before rank 0 (the only writer) touches it
    distributed.barrier()
    main, world = distributed.is_main(), distributed.world_size()
    position.run, position.epochs = run, exp.train.epochs
    seed_everything(exp.seed)
    spec = exp.train

    data = load_train_data(exp)
    check_input_size(exp.model, exp.data.patch_size, key="data.patch_size")
    if data.val_cases:
        check_validation_size(exp)
    model = build(exp.model).to(device)
    loss_fn = experiment_loss(exp, [c.label_counts for c in data.train_cases]).to(device)
    optimizer, scheduler = build_optimizer(exp, model)
    initial = None  # a resumed run continues its own weights: init_from is not applied again
    if spec.init_from is not None and not resume:
        initial = load_initial_weights(model, exp)

    start_epoch, best_dice, best_epoch, rows = 0, -math.inf, -1, []
    saved: Checkpoint | None = None
    if resume:
        saved = Checkpoint.load(run.last, map_location=device)
        check_compatible(saved, exp, run.last, resume=True)
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        if saved.rng is not None:
            set_rng_state(saved.rng)
        start_epoch = int(saved.epoch) + 1
        best_dice, best_epoch = float(saved.best_dice), int(saved.best_epoch)
        # the checkpoint's own rows: log.csv may lag behind it after a kill between the two
        rows = saved.log if saved.log is not None else read_log(run.log)
        rows = [dict(r) for r in rows if int(r["epoch"]) < start_epoch]
        if main:
            run.write_log(rows)
        position.saved = start_epoch
        if start_epoch >= spec.epochs:
            info(f"{run.path}: already trained for {start_epoch} epochs; nothing to do")
            return TrainResult(run.path, len(rows), best_dice, best_epoch, rows)
    elif main:
        run.write_start(exp, data.train_names, data.val_names, data.stats, data.spacing)

    execution = prepare_model(model, exp, device)
    if saved is not None and saved.scaler:
        execution.scaler.load_state_dict(saved.scaler)
    dataset, loader = patch_loader(exp, data.train_cases, device, world)
    info(
        f"training {exp.name}: {exp.model.arch} {exp.model.dims}D, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(data.train_cases)} train / {len(data.val_cases)} validation cases, device {device}"
        f"{f' × {world} processes' if world > 1 else ''}, "
        f"run folder {run.path}"
    )
    info(data.describe())
    if initial is not None:
        _announce_init(initial, exp)
    elif spec.init_from is not None:
        info(f"resuming: train.init_from ({spec.init_from}) is not applied again")
    announce_precision(run, execution, spec.legacy_note, main)
    result = TrainResult(run.path, 0, best_dice, best_epoch, rows)
    result.precision = execution.precision.name
    drawn = -math.inf  # when curves.png was last drawn
    model.train()
    for epoch in range(start_epoch, spec.epochs):
        position.epoch = epoch
        started = time.perf_counter()
        dataset.set_epoch(epoch)
        if world > 1:  # dropout etc.: distinct per rank, reproducible on resume
            seed_everything(_rank_seed(exp.seed, epoch, distributed.rank()))
        train_loss = _train_epoch(
            execution, model, loader, loss_fn, optimizer, scheduler, exp, device, epoch, result
        )
        val_loss, val_dice = math.nan, math.nan
        last_epoch = epoch == spec.epochs - 1
        if data.val_cases and ((epoch + 1) % spec.val_every == 0 or last_epoch):
            val_loss, val_dice = validate(
                model, data.val_cases, exp, loss_fn, device, precision=execution.precision.name
            )
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        improved = not math.isnan(val_dice) and val_dice > best_dice
        is_best = improved or (not data.val_cases and last_epoch)
        if is_best:
            best_dice = val_dice if improved else best_dice
            best_epoch = epoch
        if main:  # torchrun: rank 0 alone writes the run folder
            ckpt = Checkpoint(
                model=_unwrap(model).state_dict(),
                spec=exp.model_dump(mode="json"),
                epoch=epoch,
                best_dice=best_dice,
                best_epoch=best_epoch,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=execution.scaler.state_dict() if execution.scaler.is_enabled() else {},
                rng=rng_state(),
                normalization_stats=data.stats,
                target_spacing=list(data.spacing) if data.spacing is not None else None,
                segcli_version=__version__,
                log=[dict(r) for r in rows],
            )
            run.save_checkpoint(ckpt, best=is_best)
        position.saved = epoch + 1
        if main:
            run.write_log(rows)
            # a redraw costs ~0.2 s (bench/train.py): after validations, at the end, else every 30 s
            if not math.isnan(val_dice) or last_epoch or time.perf_counter() - drawn >= 30:
                run.plot_curves(rows, title=exp.name)
                drawn = time.perf_counter()
        _epoch_line(row, spec.epochs, best_dice)
        if on_epoch_end is not None:
            on_epoch_end(row)
    result.epochs_run = len(rows)
    result.best_dice, result.best_epoch, result.rows = best_dice, best_epoch, rows
    distributed.barrier()  # no rank returns before rank 0 has written the last epoch
    return result


def _train_epoch(
    execution: Execution,
    model: nn.Module,
    loader: Any,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    exp: Experiment,
    device: str,
    epoch: int,
    result: TrainResult,
) -> float:
    """One epoch of optimisation steps; returns the mean training loss over all ranks.

    Adds the seconds spent waiting for batches and computing to ``result``.

    Raises:
        SegcliError: the loss is not finite (training diverged).
    """
    spec, scaler = exp.train, execution.scaler
    epoch_loss, seen = 0.0, 0
    with EpochProgress(epoch, spec.epochs, spec.iterations_per_epoch) as progress:
        fetch_start = time.perf_counter()
        for image, label in loader:
            got = time.perf_counter()
            result.data_seconds += got - fetch_start
            image = image.to(device, non_blocking=True)
            image = image.contiguous(memory_format=execution.memory_format)
            label = label.to(device, non_blocking=True)
            target = loss_target(label, exp.model.num_classes, exp.multilabel, exp.region_values)
            with execution.autocast():  # the network only; the loss sees float32 logits
                output = execution.model(image)
            loss = compute_loss(
                loss_fn, float32_output(output), target, exp.multilabel, grids=execution.grids
            )
            if not torch.isfinite(loss):
                raise SegcliError(
                    f"training diverged at epoch {epoch}: loss is {float(loss)}; lower train.lr "
                    "or enable train.grad_clip"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if spec.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            value = float(loss.detach())
            epoch_loss += value
            seen += 1
            result.iterations += 1
            fetch_start = time.perf_counter()
            result.compute_seconds += fetch_start - got
            progress.update(value, image.shape[0])
    epoch_loss, seen = distributed.all_reduce_sum([epoch_loss, seen])  # mean over ranks
    return epoch_loss / max(seen, 1)


def _announce_init(initial: InitReport, exp: Experiment) -> None:
    """Where a fine-tuning run's weights came from, and its learning-rate warm-up."""
    for note in initial.notes:
        info(note)
    warmup = exp.train.warmup_epochs
    ramp = (
        f"the learning rate warms up linearly over the first {warmup} epoch(s) "
        "(train.warmup_epochs)"
        if warmup
        else "no learning-rate warm-up (train.warmup_epochs: 0)"
    )
    info(f"{initial.describe(exp.model.num_classes)}; {ramp}")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global RNGs of ``rank`` in ``epoch`` under torchrun (patches do not use it)."""
    return int(np.random.SeedSequence([seed, epoch, rank, 0x5EC]).generate_state(1)[0])


def _epoch_line(row: dict[str, Any], epochs: int, best: float) -> None:
    dice = "" if math.isnan(row["val_dice"]) else f"  val_dice {row['val_dice']:.4f}"
    vloss = "" if math.isnan(row["val_loss"]) else f"  val_loss {row['val_loss']:.4f}"
    best_s = "" if not math.isfinite(best) else f"  (best {best:.4f})"
    info(
        f"epoch {int(row['epoch']) + 1}/{epochs}  train_loss {row['train_loss']:.4f}{vloss}"
        f"{dice}{best_s}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
    )
