"""``segcli plan``: fingerprint the dataset, time candidate networks, write the spec.

    >>> from segcli.engine.plan import plan_command
    >>> result = plan_command("data/hippo", "hippo.yaml", budget_minutes=10, device="cpu")
    >>> result.plan.spec["model"]["filters"], result.spec_path

The orchestration: :func:`segcli.plan.fingerprint.extract_fingerprint` in worker processes
with a progress bar (or the cached ``EXP.fingerprint.json`` when it is newer than every file of
the dataset), :func:`segcli.plan.planner.make_plan` with :func:`measure_spec` timing real
training steps, then the spec and the fingerprint written atomically — only after the whole
plan succeeded.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcli.engine.runtime import check_writable_folder, console, info, is_quiet, track
from segcli.errors import SegcliError
from segcli.plan.budget import Measurement
from segcli.plan.fingerprint import (
    Fingerprint,
    extract_fingerprint,
    fingerprint_is_fresh,
    load_fingerprint,
    save_fingerprint,
)
from segcli.plan.planner import Plan, PlanOptions, make_plan

__all__ = ["PlanResult", "fingerprint_path", "measure_spec", "plan_command", "planning_device"]

#: timed training steps per candidate (after warm-up); more while under MIN_MEASURE_SECONDS.
#: The step time is the median of the timed steps: the first steps of a new shape (oneDNN and
#: cuDNN pick and compile kernels, bf16 most of all) and stray slow steps would otherwise
#: inflate it many times over (the warm-up of a run is a fixed cost, timed once per epoch-0)
MEASURE_STEPS = 8
WARMUP_STEPS = 4
MIN_MEASURE_SECONDS = 1.5
#: cases loaded to time loading and to draw patches from
MEASURE_CASES = 4


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    fingerprint: Fingerprint
    spec_path: Path
    fingerprint_path: Path
    fingerprint_reused: bool
    text: str


def fingerprint_path(spec_path: str | Path) -> Path:
    """``exp.yaml`` → ``exp.fingerprint.json`` (beside the spec)."""
    path = Path(spec_path)
    return path.with_name(path.stem + ".fingerprint.json")


def _progress(items: Any, total: int) -> Any:
    return track(items, "fingerprint", total=total)


def _same_root(fp: Fingerprint, root: Path) -> bool:
    try:
        return Path(fp.root).resolve() == root.resolve()
    except OSError:
        return False


def plan_command(
    root: str | Path,
    output: str | Path,
    name: str | None = None,
    dims: str = "auto",
    budget_minutes: float | None = None,
    device: str = "auto",
    gpu_memory: float | None = None,
    as_json: bool = False,
    workers: int | None = None,
    measure_steps: int = MEASURE_STEPS,
) -> PlanResult:
    """Plan ``root`` into the spec ``output`` (and ``output``'s fingerprint beside it).

    Raises:
        SegcliError: bad options, not a dataset, inconsistent data, or a budget too small.
    """
    root, output = Path(root), Path(output)
    if output.suffix.lower() not in (".yaml", ".yml"):
        raise SegcliError(f"-o {output}: the spec must be a .yaml file")
    if budget_minutes is not None and not (budget_minutes > 0 and math.isfinite(budget_minutes)):
        raise SegcliError(f"--budget-minutes {budget_minutes:g}: must be a positive number")
    if gpu_memory is not None and not (gpu_memory > 0 and math.isfinite(gpu_memory)):
        raise SegcliError(f"--gpu-memory {gpu_memory:g}: must be a positive number of GB")
    if dims not in ("auto", "2", "3"):
        raise SegcliError(f"--dims {dims}: choose auto, 2 or 3")
    check_writable_folder(output.parent, "-o")
    resolved, here = planning_device(device, budget_minutes)
    fp_path = fingerprint_path(output)

    reused = False
    fp: Fingerprint | None = None
    if fingerprint_is_fresh(fp_path, root):
        try:
            cached = load_fingerprint(fp_path)
        except SegcliError:
            cached = None
        if cached is not None and _same_root(cached, root):
            fp, reused = cached, True
    if fp is None:
        fp = extract_fingerprint(root, workers=workers, progress=None if as_json else _progress)
    if not is_quiet() and not as_json:
        how = "reused" if reused else f"extracted in {fp.seconds:.1f} s"
        info(f"fingerprint of {len(fp.cases)} cases {how} ({fp_path})")

    options = PlanOptions(
        root=str(root),
        name=name,
        dims=dims,
        budget_minutes=budget_minutes,
        device=resolved,
        gpu_memory_gb=gpu_memory,
        cpu_count=os.cpu_count() or 1,
        device_here=here,
    )
    startup: list[float] = []

    def measure(spec: dict[str, Any]) -> Measurement:
        if not startup:
            startup.append(_startup_seconds())
        progress = None if as_json else (lambda items: track(items, "preprocessing"))
        return measure_spec(spec, fp, resolved, startup[0], measure_steps, progress)

    def augment_costs(
        augment: dict[str, Any], patch: list[int], spacing: tuple[float, ...]
    ) -> dict[str, float]:
        from segcli.config.schema import AugmentSpec
        from segcli.data.augment.cost import transform_costs

        spec = AugmentSpec.model_validate(augment)
        classes = max(fp.label_values, default=0) + 1
        return transform_costs(spec, patch, spacing, channels=len(fp.channels), classes=classes)

    timed = budget_minutes is not None
    plan = make_plan(fp, options, measure=measure if timed else None,
                     augment_costs=augment_costs if timed else None)  # fmt: skip
    from segcli.plan.writer import render_json, write_spec

    if not reused:
        save_fingerprint(fp, fp_path)
    text = write_spec(plan, output)
    if as_json:
        console.print(
            render_json(plan, str(output), str(fp_path)), markup=False, highlight=False,
            soft_wrap=True,
        )  # fmt: skip
    else:
        _print_table(plan, output, fp_path)
    return PlanResult(plan, fp, output, fp_path, reused, text)


def planning_device(device: str, budget_minutes: float | None) -> tuple[str, bool]:
    """The device to plan for, and whether it is on this machine.

    A plan is rules and arithmetic: a CUDA device need not be here (plan on a laptop or a
    login node, train on a GPU node, as nnU-Net plans), unless ``--budget-minutes`` asks the
    plan to time training steps on it.

    Raises:
        SegcliError: an unknown device, or a budget for a device this machine does not have.
    """
    from segcli.engine.runtime import resolve_device

    choice = (device or "auto").strip().lower()
    if choice.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            index = choice.partition(":")[2]
            if choice != "cuda" and not (choice.startswith("cuda:") and index.isdigit()):
                raise SegcliError(f"--device {device}: not a device (cuda, cuda:N, cpu or auto)")
            if budget_minutes is not None:
                raise SegcliError(
                    f"--budget-minutes {budget_minutes:g} --device {device}: a budget is fitted "
                    f"by timing training steps on the device, and {device} is not on this "
                    "machine; plan without --budget-minutes (nnU-Net's rules and --gpu-memory "
                    "alone), or with it on the machine that will train"
                )
            return choice, False
    return resolve_device(device), True


def _print_table(plan: Plan, output: Path, fp_path: Path) -> None:
    from rich.table import Table

    if is_quiet():
        return
    table = Table(title=f"plan → {output}", show_lines=False, expand=False)
    table.add_column("decision", style="bold", no_wrap=True)
    table.add_column("value")
    table.add_column("rule and numbers")
    for d in plan.decisions:
        table.add_row(d.name, d.value, d.rule)
    console.print(table)
    colours = {"ok": "green", "note": "cyan", "warning": "yellow"}
    for c in plan.checks:
        console.print(f"[{colours[c.level]}]{c.level}[/] {c.name}: {c.message}")
    info(f"wrote {output} and {fp_path}; train with: segcli train {output}")


# --------------------------------------------------------------------------- measurement


def _startup_seconds() -> float:
    """Wall clock of a fresh interpreter importing segcli's training engine (torch included)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import segcli.engine.train, segcli.models, segcli.losses"],
        check=False,
        capture_output=True,
    )
    return time.perf_counter() - started


def _measure_cases(fp: Fingerprint, k: int) -> list[str]:
    """``k`` cases closest to the median size (what a typical patch is drawn from)."""
    sizes = np.asarray([c.voxels for c in fp.cases], dtype=np.float64)
    order = np.argsort(np.abs(sizes - np.median(sizes)), kind="stable")
    return [fp.cases[i].name for i in order[:k]]


def _ct_stats(fp: Fingerprint) -> dict[str, list[float]]:
    return {
        "low": [c.percentile_00_5 for c in fp.intensities],
        "high": [c.percentile_99_5 for c in fp.intensities],
        "mean": [c.mean for c in fp.intensities],
        "std": [max(c.std, 1e-8) for c in fp.intensities],
    }


def measure_spec(
    spec: dict[str, Any],
    fp: Fingerprint,
    device: str,
    startup_seconds: float,
    steps: int = MEASURE_STEPS,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> Measurement:
    """Time a candidate spec on ``device``: loading, training steps, one validation case.

    Builds the preprocessing cache of every case first (``progress`` wraps the cases built),
    as ``segcli train`` would; loading is then timed from the cache.

    The steps are real: patches drawn by :class:`segcli.data.loaders.PatchDataset` through
    the spec's DataLoader workers, forward and backward of the planned U-Net with its
    deep-supervision loss, AdamW update — the loop of ``segcli train``.
    """
    import torch

    from segcli.config import from_dict
    from segcli.data.loaders import cache_mode, cases_from_cache, preprocess, resolve_spacing
    from segcli.engine.train_data import patch_loader
    from segcli.inference import sliding_window
    from segcli.losses import build_loss
    from segcli.losses.deep_supervision import compute_loss
    from segcli.models import build
    from segcli.precision import float32_output, memory_format, resolve_precision

    exp = from_dict(spec, source="<candidate plan>")
    names = _measure_cases(fp, min(MEASURE_CASES, len(fp.cases)))
    stats = _ct_stats(fp) if exp.data.normalization == "ct_auto" else None
    # segcli train reads its cases from the preprocessing cache: build it for every case now
    # (once: every candidate shares the data settings), so the training run finds it warm and
    # the loading timed here is the cached loading that run will do
    spacing = resolve_spacing(exp.data, exp.seed)
    everything = [c.name for c in fp.cases]
    report = preprocess(exp.data, everything, spacing, progress=progress)
    mode = cache_mode(exp.data, report.nbytes)
    cases_from_cache(report, names[:1], exp.data, stats, mode)  # warm-up (imports, file cache)
    # loading = finding the cases and checking the cache (fixed) + a cost per case
    started = time.perf_counter()
    report = preprocess(exp.data, everything, spacing)
    load_fixed = time.perf_counter() - started
    started = time.perf_counter()
    cases = cases_from_cache(report, names, exp.data, stats, mode)
    load_seconds = (time.perf_counter() - started) / len(names)
    torch.manual_seed(0)
    model = build(exp.model).to(device)
    # the precision and activation layout segcli train will use on this device
    precision = resolve_precision(exp.train.precision, device)
    fmt = memory_format(exp.model.dims, device)
    model.to(memory_format=fmt)
    scaler = precision.grad_scaler()
    loss_fn = build_loss(exp.loss, exp.model.num_classes, exp.multilabel).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=exp.train.lr)
    total = WARMUP_STEPS + max(steps, 1) * 4  # upper bound; the loop stops on time
    # the DataLoader of segcli train (one epoch of ``total`` batches, one process)
    sized = exp.model_copy(
        update={"train": exp.train.model_copy(update={"iterations_per_epoch": total})}
    )
    dataset, loader = patch_loader(sized, cases, device, world=1)
    dataset.set_epoch(0)
    durations: list[float] = []
    t0 = last = time.perf_counter()
    model.train()
    for i, (image, label) in enumerate(loader):
        if i == WARMUP_STEPS:
            _sync(device)
            t0 = last = time.perf_counter()
        image = image.to(device).contiguous(memory_format=fmt)
        label = label.to(device)
        with precision.autocast():  # the network only; the loss sees float32 logits
            output = model(image)
        loss = compute_loss(loss_fn, float32_output(output), label, exp.multilabel)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if i >= WARMUP_STEPS:
            _sync(device)
            now = time.perf_counter()
            durations.append(now - last)
            last = now
            if len(durations) >= steps and now - t0 >= MIN_MEASURE_SECONDS:
                break
    _sync(device)
    step_seconds = float(np.median(durations)) if durations else time.perf_counter() - t0
    del loader
    case = cases[0].materialize()
    model.eval()

    def validate_case() -> float:
        started = time.perf_counter()
        sliding_window(
            model,
            torch.from_numpy(case.image),
            patch_size=exp.inference.patch_size,
            overlap=exp.inference.overlap,
            blend=exp.inference.blend,
            batch_size=exp.inference.batch_size,
            device=device,
            pad_mode=exp.inference.pad_mode,
            precision=precision.name,  # validation runs in the training precision
        )
        _sync(device)
        return time.perf_counter() - started

    validate_case()  # warm-up: the first pass of new window shapes picks its kernels
    val_seconds = validate_case()
    # the sliding window's cost scales with the image: rescale to the median case
    target = exp.data.spacing
    median_voxels = float(
        np.median(
            [
                c.voxels * float(np.prod(c.spacing)) / float(np.prod(target or c.spacing))
                for c in fp.cases
            ]
        )
    )
    val_seconds *= max(median_voxels / max(case.image[0].size, 1), 1e-3)
    epoch_seconds = _epoch_bookkeeping_seconds(model)
    return Measurement(
        step_seconds, val_seconds, load_seconds, startup_seconds + load_fixed, epoch_seconds
    )


def _epoch_bookkeeping_seconds(model: Any) -> float:
    """What ``segcli train`` does after every epoch besides validating: two checkpoints of the
    model (and its optimiser state, about twice the weights) and the curves PNG."""
    import tempfile

    import torch

    from segcli.engine.run_dir import plot_curves

    rows = [
        {"epoch": i, "train_loss": 1.0 / (i + 1), "val_loss": 1.0, "val_dice": 0.5, "lr": 1e-3,
         "seconds": 1.0}
        for i in range(10)
    ]  # fmt: skip
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for name in ("best.pt", "last.pt"):
            torch.save({"model": state, "optimizer": [state, state]}, Path(tmp) / name)
        plot_curves(Path(tmp) / "curves.png", rows, title="timing")
        return time.perf_counter() - started


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
