"""How ``segcli train``'s optimisation step runs: precision, memory layout, DDP, compile.

    >>> from segcli.engine.execution import prepare_model
    >>> execution = prepare_model(model, exp, "cuda")
    >>> with execution.autocast():
    ...     output = execution.model(image.contiguous(memory_format=execution.memory_format))

One place decides how the network is called during training (:func:`prepare_model`) and says so
on the console and in the run folder's ``precision.json`` (:func:`announce_precision`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from segcli.config import Experiment
from segcli.engine import distributed
from segcli.engine.run_dir import RunDir
from segcli.engine.runtime import info
from segcli.models.unet import HeadGrid, supervision_grids
from segcli.precision import PrecisionChoice, memory_format, resolve_precision

__all__ = ["Execution", "announce_precision", "prepare_model"]


@dataclass
class Execution:
    """How a training step runs (see :func:`prepare_model`)."""

    model: nn.Module  # what the step calls: DDP-wrapped and/or compiled
    memory_format: torch.memory_format
    autocast: Callable[[], AbstractContextManager[Any]]
    scaler: torch.amp.GradScaler
    precision: PrecisionChoice
    #: valid-padding deep supervision: where each output sits on the patch (compute_loss)
    grids: list[HeadGrid] | None = None


def prepare_model(model: nn.Module, exp: Experiment, device: str) -> Execution:
    """Mixed precision, memory format, DistributedDataParallel and torch.compile, in one place.

    ``train.precision`` is resolved for ``device`` (:func:`segcli.precision.resolve_precision`:
    autocast in bf16/fp16 or none, a gradient scaler enabled for fp16 only); the activation
    layout follows the rule measured by bench/precision.py
    (:func:`segcli.precision.memory_format`); under torchrun DistributedDataParallel averages
    the ranks' gradients.
    """
    spec = exp.train
    precision = resolve_precision(spec.precision, device)
    layout = memory_format(exp.model.dims, device)
    model.to(memory_format=layout)
    train_model = distributed.wrap_model(model, device)
    train_model = torch.compile(train_model) if spec.compile else train_model
    grids = supervision_grids(model, exp.data.patch_size)
    return Execution(
        train_model, layout, precision.autocast, precision.grad_scaler(), precision, grids
    )


def announce_precision(
    run: RunDir, execution: Execution, legacy_note: str | None, main: bool
) -> None:
    """Say on the console and in the run folder's ``precision.json`` what runs and why."""
    import json

    from segcli.engine.run_dir import atomic_write_text

    if legacy_note:
        info(f"warning: {legacy_note}")
    choice = execution.precision
    channels_last = execution.memory_format in (torch.channels_last, torch.channels_last_3d)
    info(
        f"precision {choice.describe()}; "
        f"{'channels-last' if channels_last else 'contiguous'} activations"
    )
    if main:
        record = {**choice.as_dict(), "channels_last": channels_last}
        atomic_write_text(run.path / "precision.json", json.dumps(record, indent=1) + "\n")
