"""The optimiser and the learning-rate schedule of ``segcli train``.

>>> from segcli.engine.optim import build_optimizer, lr_factor
>>> optimizer, scheduler = build_optimizer(exp, model)
>>> [round(lr_factor(s, total=100, warmup=10, schedule="poly"), 3) for s in (0, 9, 10, 99)]
[0.1, 1.0, 1.0, 0.017]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segcli.config import Experiment

__all__ = ["build_optimizer", "lr_factor"]


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


def build_optimizer(
    exp: Experiment, model: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``train.optimizer`` (SGD with Nesterov momentum, or AdamW) and its per-step schedule."""
    spec = exp.train
    optimizer: torch.optim.Optimizer
    if spec.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay,
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay
        )
    total_steps = spec.epochs * spec.iterations_per_epoch
    warmup = spec.warmup_epochs * spec.iterations_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, spec.schedule)
    )
    return optimizer, scheduler
