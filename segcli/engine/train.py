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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segcli import __version__
from segcli.config import Experiment, dump, from_dict
from segcli.engine import distributed
from segcli.engine.run_dir import RunDir, plot_curves, read_log, write_log
from segcli.engine.runtime import (
    check_writable_folder,
    console,
    info,
    resolve_device,
    seed_everything,
    show_progress,
)
from segcli.errors import CheckpointError, DataError, Interrupted, SegcliError, SpecError
from segcli.io.checkpoint import load_checkpoint, save_checkpoint

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


# --------------------------------------------------------------------------- schedules


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up over ``warmup`` steps, then ``poly`` ((1 − t)^0.9, nnU-Net), ``cosine`` or
    ``constant`` over the remaining steps.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")


def _optimizer(exp: Experiment, model: nn.Module) -> torch.optim.Optimizer:
    spec = exp.train
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


# --------------------------------------------------------------------------- state


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


# --------------------------------------------------------------------------- targets


def _to_target(
    label: torch.Tensor,
    num_outputs: int,
    multilabel: bool,
    regions: tuple[tuple[int, ...], ...] | None = None,
) -> torch.Tensor:
    """(B, *spatial) int labels → the loss's target: indices, or (B, K, *spatial) region masks."""
    if not multilabel:
        return label
    from segcli.labels import default_regions
    from segcli.losses.regions import region_target

    return region_target(label, regions or default_regions(num_outputs))


def _centre_crop(target: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Centre-crop the trailing spatial axes of ``target`` to ``spatial`` (valid-padding nets)."""
    n = len(spatial)
    have = tuple(target.shape[-n:])
    if have == spatial:
        return target
    index = [slice(None)] * (target.ndim - n)
    for h, s in zip(have, spatial, strict=True):
        start = (h - s) // 2
        index.append(slice(start, start + s))
    return target[tuple(index)]


def _downsample_target(
    target: torch.Tensor, spatial: tuple[int, ...], multilabel: bool
) -> torch.Tensor:
    """Nearest-neighbour downsampling of a target to a deep-supervision output's size."""
    if multilabel:
        return F.interpolate(target, size=spatial, mode="nearest")
    return (
        F.interpolate(target.unsqueeze(1).float(), size=spatial, mode="nearest").squeeze(1).long()
    )


def compute_loss(
    loss_fn: nn.Module,
    output: torch.Tensor | list[torch.Tensor],
    target: torch.Tensor,
    multilabel: bool,
) -> torch.Tensor:
    """Loss for one output, or the deep-supervision sum with weights 1/2^i (normalised)."""
    if isinstance(output, list | tuple):
        weights = [0.5**i for i in range(len(output))]
        total = sum(weights)
        loss = output[0].new_zeros(())
        for w, out in zip(weights, output, strict=True):
            spatial = tuple(out.shape[2:])
            tgt = _centre_crop(target, tuple(target.shape[-len(spatial) :]))
            if tuple(tgt.shape[-len(spatial) :]) != spatial:
                tgt = _downsample_target(tgt, spatial, multilabel)
            loss = loss + (w / total) * loss_fn(out, tgt)
        return loss
    spatial = tuple(output.shape[2:])
    return loss_fn(output, _centre_crop(target, spatial))


# --------------------------------------------------------------------------- validation


def validate(
    model: nn.Module,
    cases: list[Any],
    exp: Experiment,
    loss_fn: nn.Module,
    device: str,
) -> tuple[float, float]:
    """Sliding-window inference on the validation cases → (mean loss, mean foreground Dice).

    The loss is the training loss evaluated on the stitched probabilities (log-probabilities
    passed as logits); Dice is ``segcli.metrics`` Dice averaged over foreground labels and cases
    (a label absent from both prediction and reference scores 1, as in ``segcli evaluate``).

    Under torchrun this is a collective: every rank passes all ``cases``, scores its share
    (:func:`segcli.engine.distributed.shard`), and the sums and counts are all-reduced, so every
    rank returns the same means over all cases.  ``model`` is the plain network, not the
    DistributedDataParallel wrapper.
    """
    sums = _validation_sums(model, distributed.shard(cases), exp, loss_fn, device)
    loss_sum, dice_sum, count = distributed.all_reduce_sum(sums)
    return loss_sum / count, dice_sum / count


def _validation_sums(
    model: nn.Module,
    cases: list[Any],
    exp: Experiment,
    loss_fn: nn.Module,
    device: str,
) -> tuple[float, float, int]:
    """(Σ loss, Σ mean foreground Dice, number of cases) over ``cases`` (see :func:`validate`)."""
    from segcli.inference import sliding_window
    from segcli.labels import decode_probabilities
    from segcli.metrics.regions import mean_foreground_dice

    inf = exp.inference
    num_out = exp.model.num_classes
    losses, dices = [], []
    model.eval()
    for case in cases:
        image = torch.from_numpy(case.image)
        probs = sliding_window(
            model,
            image,
            patch_size=inf.patch_size,
            overlap=inf.overlap,
            blend=inf.blend,
            batch_size=inf.batch_size,
            tta=False,
            multilabel=exp.multilabel,
            device=device,
            pad_mode=inf.pad_mode,
            pad_value=inf.pad_value,
        ).float()
        label = torch.from_numpy(case.label.astype(np.int64))
        with torch.no_grad():
            eps = 1e-6
            if exp.multilabel:
                p = probs.clamp(eps, 1 - eps)
                logits = torch.log(p) - torch.log1p(-p)
            else:
                logits = torch.log(probs.clamp_min(eps))
            target = _to_target(label.unsqueeze(0), num_out, exp.multilabel, exp.region_values)
            losses.append(float(loss_fn(logits.unsqueeze(0), target)))
        pred = decode_probabilities(probs.numpy(), exp.region_values)
        dices.append(
            mean_foreground_dice(pred, case.label, case.spacing, num_out, exp.region_values)
        )
    model.train()
    return float(sum(losses)), float(sum(dices)), len(cases)


# --------------------------------------------------------------------------- the loop


def _check_run_dir(run: RunDir, resume: bool) -> None:
    if resume:
        if not run.last.is_file():
            raise SegcliError(
                f"{run.last}: nothing to resume (no checkpoint_last.pt in {run.path}); "
                "start without --resume"
            )
    elif run.last.is_file():
        raise SegcliError(
            f"{run.path}: already holds a training run (checkpoint_last.pt); use --resume to "
            "continue it, or --output / --set name=... for a new run"
        )
    else:  # before loading any data: an unwritable run folder fails at once
        check_writable_folder(run.path, "--output (or output / name in the spec)")


def _check_label_range(cases: list[Any], exp: Experiment) -> None:
    """Every label value must be a class of the model (else the loss fails mid-training)."""
    num_out = exp.model.num_classes
    if exp.regions is not None:
        from segcli.labels import check_region_labels

        check_region_labels(cases, exp.regions)
        return
    top = num_out if exp.multilabel else num_out - 1
    for case in cases:
        if case.label is None or not case.label.size:
            continue
        found = int(case.label.max())
        if found > top:
            need = found if exp.multilabel else found + 1
            meaning = (
                f"{num_out} label channel(s), values 1..{num_out}"
                if exp.multilabel
                else f"{num_out} classes, values 0..{top}"
            )
            raise DataError(
                f"case '{case.name}': its label map has value {found} but the model has "
                f"{meaning}; set model.classes to {need} or more (or fix the label map)"
            )


def _check_validation_size(exp: Experiment) -> None:
    """Validation runs sliding windows of ``inference.patch_size``: check them before training."""
    from segcli.models import check_input_size

    patch = tuple(exp.inference.patch_size or exp.data.patch_size)
    out = tuple(check_input_size(exp.model, patch, key="inference.patch_size"))
    if out != patch:
        window = getattr(exp.model, "mode", None) == "window"
        fix = "model.mode: dense" if window else "same padding (model.padding: same)"
        raise SpecError(
            f"model.arch '{exp.model.arch}' maps inference.patch_size {list(patch)} to a smaller "
            f"output {list(out)}, but validation and predict need outputs of the input's size; "
            f"use {fix} or train without validation (data.val_fraction: 0)"
        )


def _check_resume_spec(saved: dict[str, Any], exp: Experiment, path: Path) -> None:
    """A run may be resumed with more epochs, but not with another model, data or loss."""
    try:
        old = from_dict(saved)
    except SpecError as exc:
        raise CheckpointError(
            f"{path}: the spec stored in the checkpoint is invalid: {exc}"
        ) from None
    for key in ("model", "loss", "data", "multilabel", "regions", "seed"):
        if getattr(old, key) != getattr(exp, key):
            raise CheckpointError(
                f"{path}: cannot resume: the spec's '{key}' section differs from the one the run "
                "was started with; resume with the run's config.yaml"
            )


@dataclass
class _Position:
    """Where the loop is, for the message of an interrupted run."""

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
    position = _Position()
    with distributed.session(device) as ctx:  # torchrun: one process per device
        try:
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
    position: _Position,
) -> TrainResult:
    from segcli.data.loaders import (
        PatchDataset,
        build_loader,
        list_case_names,
        load_cases,
        resolve_spacing,
        split_cases,
    )
    from segcli.losses import build_loss
    from segcli.models import build, check_input_size

    device = resolve_device(device)
    run = RunDir(Path(run_dir) if run_dir is not None else Path(exp.output) / exp.name)
    _check_run_dir(run, resume)
    # torchrun: every rank checked the folder before rank 0 (the only writer) touches it
    distributed.barrier()
    main, world = distributed.is_main(), distributed.world_size()
    position.run, position.epochs = run, exp.train.epochs
    seed_everything(exp.seed)
    spec = exp.train

    # ---- data
    names = list_case_names(exp.data, exp.seed)
    train_names, val_names = split_cases(names, exp.data, exp.seed)
    if not train_names:
        raise SegcliError(f"{exp.data.root or 'synthetic data'}: no training cases after the split")
    stats = None
    if exp.data.normalization == "ct_auto":
        from segcli.data.statistics import foreground_intensity_stats

        stats = foreground_intensity_stats(exp.data, train_names, exp.seed, progress=_track_cases)
    # data.spacing (auto: the dataset's median) resolved once; stored for predict below
    target_spacing = resolve_spacing(exp.data, exp.seed)
    train_cases = load_cases(exp.data, train_names, exp.seed, stats=stats, spacing=target_spacing)
    val_cases = (
        load_cases(exp.data, val_names, exp.seed, stats=stats, spacing=target_spacing)
        if val_names
        else []
    )
    if spec.val_max_cases is not None:
        val_cases = val_cases[: spec.val_max_cases]
    _check_label_range(train_cases + val_cases, exp)
    in_channels = train_cases[0].image.shape[0]
    if in_channels != exp.model.in_channels:
        raise SegcliError(
            f"model.in_channels is {exp.model.in_channels} but the data has {in_channels} "
            f"channel(s) (case '{train_cases[0].name}')"
        )

    # ---- model, loss, optimiser
    check_input_size(exp.model, exp.data.patch_size, key="data.patch_size")
    if val_cases:
        _check_validation_size(exp)
    model = build(exp.model).to(device)
    class_weights = None
    if exp.loss.name == "weighted_ce":
        if exp.loss.weights == "auto":
            from segcli.losses import class_frequency_weights

            class_weights = class_frequency_weights(
                [c.label for c in train_cases], exp.model.num_classes
            )
        else:
            class_weights = list(exp.loss.weights)
    loss_fn = build_loss(exp.loss, exp.model.num_classes, exp.multilabel, class_weights).to(device)
    optimizer = _optimizer(exp, model)
    total_steps = spec.epochs * spec.iterations_per_epoch
    warmup = spec.warmup_epochs * spec.iterations_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, spec.schedule)
    )
    use_amp = spec.amp and device.startswith("cuda")
    amp_dtype = torch.bfloat16 if spec.amp_dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    # ---- state
    start_epoch, best_dice, best_epoch, rows = 0, -math.inf, -1, []
    if resume:
        state = load_checkpoint(run.last, map_location=device)
        _check_resume_spec(state["spec"], exp, run.last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch = int(state["epoch"]) + 1
        best_dice, best_epoch = float(state["best_dice"]), int(state["best_epoch"])
        # the checkpoint's own rows: log.csv may lag behind it after a kill between the two
        saved_rows = state.get("log")
        rows = saved_rows if isinstance(saved_rows, list) else read_log(run.log)
        rows = [dict(r) for r in rows if int(r["epoch"]) < start_epoch]
        if main:
            write_log(run.log, rows)
        position.saved = start_epoch
        if start_epoch >= spec.epochs:
            info(f"{run.path}: already trained for {start_epoch} epochs; nothing to do")
            return TrainResult(run.path, len(rows), best_dice, best_epoch, rows)
    elif main:
        from segcli.engine.run_dir import atomic_write_text

        atomic_write_text(run.config, dump(exp))
        run.write_split(train_names, val_names)
        if stats is not None:
            import json

            atomic_write_text(run.stats, json.dumps(stats, indent=1) + "\n")
        if target_spacing is not None:
            import json

            text = json.dumps({"spacing": list(target_spacing)}) + "\n"
            atomic_write_text(run.path / "spacing.json", text)

    # channels-last activations are measurably faster for CPU convolutions (bench/inference.py)
    memory_format = _memory_format(exp.model.dims, device)
    model.to(memory_format=memory_format)
    # torchrun: DistributedDataParallel averages the gradients of the ranks' batches
    train_model = distributed.wrap_model(model, device)
    train_model = torch.compile(train_model) if spec.compile else train_model
    dataset = PatchDataset(
        train_cases,
        patch_size=exp.data.patch_size,
        foreground_fraction=exp.data.foreground_fraction,
        augment=exp.data.augment,
        pad_mode=exp.inference.pad_mode,
        pad_value=exp.inference.pad_value,
        # train.batch_size is per rank: the ranks split one epoch of batch_size · world patches
        length=spec.iterations_per_epoch * spec.batch_size * world,
        seed=exp.seed,
    )
    loader = build_loader(
        dataset,
        spec.batch_size,
        spec.workers,
        exp.seed,
        pin_memory=device.startswith("cuda"),
        rank=distributed.rank(),
        world_size=world,
    )
    info(
        f"training {exp.name}: {exp.model.arch} {exp.model.dims}D, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(train_cases)} train / {len(val_cases)} validation cases, device {device}"
        f"{f' × {world} processes' if world > 1 else ''}, "
        f"run folder {run.path}"
    )
    result = TrainResult(run.path, 0, best_dice, best_epoch, rows)
    num_out = exp.model.num_classes
    model.train()
    for epoch in range(start_epoch, spec.epochs):
        position.epoch = epoch
        started = time.perf_counter()
        dataset.set_epoch(epoch)
        if world > 1:  # dropout etc.: distinct per rank, reproducible on resume
            seed_everything(_rank_seed(exp.seed, epoch, distributed.rank()))
        epoch_loss, seen = 0.0, 0
        progress = _EpochProgress(epoch, spec.epochs, spec.iterations_per_epoch)
        with progress:
            fetch_start = time.perf_counter()
            for image, label in loader:
                got = time.perf_counter()
                result.data_seconds += got - fetch_start
                image = image.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                target = _to_target(
                    label.to(device, non_blocking=True), num_out, exp.multilabel, exp.region_values
                )
                with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=use_amp):
                    output = train_model(image)
                    loss = compute_loss(loss_fn, output, target, exp.multilabel)
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
        train_loss = epoch_loss / max(seen, 1)
        val_loss, val_dice = math.nan, math.nan
        last_epoch = epoch == spec.epochs - 1
        if val_cases and ((epoch + 1) % spec.val_every == 0 or last_epoch):
            val_loss, val_dice = validate(model, val_cases, exp, loss_fn, device)
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
        no_val_best = not val_cases and last_epoch
        if improved or no_val_best:
            best_dice = val_dice if improved else best_dice
            best_epoch = epoch
        state = {
            "model": _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": _rng_state(),
            "epoch": epoch,
            "best_dice": best_dice,
            "best_epoch": best_epoch,
            "spec": exp.model_dump(mode="json"),
            "normalization_stats": stats,
            "target_spacing": list(target_spacing) if target_spacing is not None else None,
            "segcli_version": __version__,
            "log": [dict(r) for r in rows],
        }
        if main:  # torchrun: rank 0 alone writes the run folder
            if improved or no_val_best:
                save_checkpoint(run.best, state)
            save_checkpoint(run.last, state)  # last: a kill between the two keeps best consistent
        position.saved = epoch + 1
        if main:
            write_log(run.log, rows)
            plot_curves(run.curves, rows, title=exp.name)
        _epoch_line(row, spec.epochs, best_dice)
        if on_epoch_end is not None:
            on_epoch_end(row)
    result.epochs_run = len(rows)
    result.best_dice, result.best_epoch, result.rows = best_dice, best_epoch, rows
    distributed.barrier()  # no rank returns before rank 0 has written the last epoch
    return result


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global RNGs of ``rank`` in ``epoch`` under torchrun (patches do not use it)."""
    return int(np.random.SeedSequence([seed, epoch, rank, 0x5EC]).generate_state(1)[0])


def _memory_format(dims: int, device: str) -> torch.memory_format:
    if not device.startswith("cpu"):
        return torch.contiguous_format
    return torch.channels_last if dims == 2 else torch.channels_last_3d


def _track_cases(items: Any) -> Any:
    from segcli.engine.runtime import track

    return track(items, "intensity statistics")


def _epoch_line(row: dict[str, Any], epochs: int, best: float) -> None:
    dice = "" if math.isnan(row["val_dice"]) else f"  val_dice {row['val_dice']:.4f}"
    vloss = "" if math.isnan(row["val_loss"]) else f"  val_loss {row['val_loss']:.4f}"
    best_s = "" if not math.isfinite(best) else f"  (best {best:.4f})"
    info(
        f"epoch {int(row['epoch']) + 1}/{epochs}  train_loss {row['train_loss']:.4f}{vloss}"
        f"{dice}{best_s}  lr {row['lr']:.2e}  {row['seconds']:.1f}s"
    )


class _EpochProgress:
    """A rich bar per epoch (iteration, loss, samples/s, ETA); silent off-terminal."""

    def __init__(self, epoch: int, epochs: int, iterations: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

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

    def __enter__(self) -> _EpochProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, loss: float, batch: int) -> None:
        self.samples += batch
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=1, loss=loss, rate=rate)
