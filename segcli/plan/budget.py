"""Fit a training schedule to a wall-clock budget from measured step times (pure arithmetic).

    >>> m = Measurement(step_seconds=0.2, val_case_seconds=0.1, load_case_seconds=0.01,
    ...                 startup_seconds=5.0)
    >>> s = size_schedule(m, budget_seconds=600, train_cases=166, val_cases=42)
    >>> s.epochs, s.iterations_per_epoch, s.val_every

The engine measures (:mod:`segcli.engine.plan` times real training steps, one validation case
and the loading of a few cases on the chosen device); this module decides.  The rules:

* plan for :data:`SAFETY` (90 %) of the budget: the rest absorbs checkpoint writing, curves
  and timing noise;
* fixed costs first: process start-up plus loading every case (read, normalise, resample);
  then the bookkeeping of every epoch (checkpoints, log, curves);
* validation: :data:`VALIDATIONS` passes over the validation cases (enough to pick the best
  epoch), at most :data:`VALIDATION_SHARE` of the budget — beyond that only the first
  ``val_max_cases`` cases are validated;
* everything else is training iterations; ``iterations_per_epoch`` = total / 30 clamped to
  [25, 250] (250 is nnU-Net's epoch; 30 epochs give the poly schedule and the validation
  cadence enough resolution), ``epochs`` = total / iterations_per_epoch (rounded down, the
  remainder spread over the epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ENOUGH_ITERATIONS",
    "MIN_GOOD_PATCH_ITERATIONS",
    "MIN_ITERATIONS",
    "Measurement",
    "Schedule",
    "schedule_for_iterations",
    "size_schedule",
]

#: share of the budget the plan uses
SAFETY = 0.9
#: validation passes over a run (the hand-tuned Hippocampus spec validates 8 times)
VALIDATIONS = 8
#: validation may take at most this share of the budget
VALIDATION_SHARE = 0.15
#: nnU-Net's iterations per epoch (the upper clamp)
NNUNET_EPOCH = 250
#: optimiser steps below which the planner trades network width (then patch) for iterations.
#: The hand-tuned Hippocampus spec (docs/results.md) still improves at its last epoch after
#: 2,400 steps; MONAI's 4,558 steps of a 3× larger network reach the same Dice.
ENOUGH_ITERATIONS = 2000
#: the patch shrinks (below nnU-Net's) only while the narrowest network gets fewer steps than
#: this: a narrower network costs less accuracy than a patch that cuts objects and context
MIN_GOOD_PATCH_ITERATIONS = ENOUGH_ITERATIONS // 2
#: fewer steps than this and no U-Net is trained at all: the budget is refused
MIN_ITERATIONS = 100


@dataclass(frozen=True)
class Measurement:
    """Measured costs on the planning machine (seconds).

    Attributes:
        step_seconds: one optimiser step (batch drawn, forward, backward, update).
        val_case_seconds: sliding-window validation of one median-sized case.
        load_case_seconds: reading, normalising and resampling one case at start-up.
        startup_seconds: process start, imports, model build (fixed).
        epoch_seconds: bookkeeping after each epoch (checkpoints, log, curves.png).
    """

    step_seconds: float
    val_case_seconds: float
    load_case_seconds: float
    startup_seconds: float
    epoch_seconds: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """A training schedule and its predicted wall clock (seconds)."""

    epochs: int
    iterations_per_epoch: int
    val_every: int
    val_max_cases: int | None
    predicted_seconds: float
    train_seconds: float
    validation_seconds: float
    fixed_seconds: float

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    @property
    def validations(self) -> int:
        return validation_count(self.epochs, self.val_every)


def validation_count(epochs: int, val_every: int) -> int:
    """Validations ``segcli train`` runs: every ``val_every`` epochs, and always the last."""
    return epochs // val_every + (1 if epochs % val_every else 0)


def schedule_for_iterations(total: int, validations: int = VALIDATIONS) -> tuple[int, int, int]:
    """``(epochs, iterations_per_epoch, val_every)`` for about ``total`` optimiser steps."""
    total = max(total, 1)
    per_epoch = min(max(25, min(NNUNET_EPOCH, total // 30)), total)
    epochs = max(1, total // per_epoch)
    per_epoch = total // epochs  # spread the remainder: use every step that fits
    val_every = max(1, math.ceil(epochs / max(validations, 1)))
    return epochs, per_epoch, val_every


def size_schedule(
    m: Measurement, budget_seconds: float, train_cases: int, val_cases: int
) -> Schedule:
    """The longest schedule whose predicted wall clock fits ``budget_seconds`` (see module doc).

    A schedule with fewer than :data:`MIN_ITERATIONS` steps is still returned (the caller
    decides to shrink or refuse); its ``epochs`` may then be 1 with few iterations.
    """
    usable = budget_seconds * SAFETY
    fixed = m.startup_seconds + m.load_case_seconds * (train_cases + val_cases)
    val_used: int | None = None
    per_validation = val_cases * m.val_case_seconds
    if val_cases and VALIDATIONS * per_validation > VALIDATION_SHARE * usable:
        cases = int(VALIDATION_SHARE * usable / (VALIDATIONS * max(m.val_case_seconds, 1e-9)))
        val_used = max(1, min(cases, val_cases))
        per_validation = val_used * m.val_case_seconds
    val_max = val_used if val_used is not None and val_used < val_cases else None

    def build(steps: int) -> Schedule:
        epochs, per_epoch, val_every = schedule_for_iterations(max(steps, 1))
        if steps < 1:
            epochs, per_epoch, val_every = 1, 1, 1
        validations = validation_count(epochs, val_every) if val_cases else 0
        train_s = epochs * per_epoch * m.step_seconds
        val_s = validations * per_validation
        return Schedule(
            epochs=epochs,
            iterations_per_epoch=per_epoch,
            val_every=val_every,
            val_max_cases=val_max,
            predicted_seconds=fixed + train_s + val_s + epochs * m.epoch_seconds,
            train_seconds=train_s,
            validation_seconds=val_s,
            fixed_seconds=fixed,
        )

    # the largest step count whose schedule fits: the wall clock grows with the steps (each
    # step, and the epochs and validations they bring), so bisect it.  Solving for the steps
    # with a guessed epoch count instead oscillates when an epoch's bookkeeping costs many
    # steps (a fast step with slow checkpoints): more steps, more epochs, no steps left.
    low, high = 0, max(0, int((usable - fixed) / max(m.step_seconds, 1e-9))) + 1
    while high - low > 1:
        middle = (low + high) // 2
        if build(middle).predicted_seconds <= usable:
            low = middle
        else:
            high = middle
    return build(low)
