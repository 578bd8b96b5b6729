"""Would each postprocessing step raise Dice?  (``segcli evaluate --compare-postprocessing``)

    >>> from segcli.io.dataset import pair_cases
    >>> from segcli.metrics.postprocessing_gain import compare_postprocessing, postprocessing_steps
    >>> rows = compare_postprocessing(pair_cases("pred", "ref"), [1, 2], postprocessing_steps(20))
    >>> [(r.step, r.label, r.dice_before, r.dice_after, r.keep) for r in rows]

Each step of :mod:`segcli.postprocess` (the label clean-up ``segcli predict`` applies) is applied
on its own to every prediction, and the mean Dice per label over the cases is compared before
and after.  nnU-Net's rule keeps a step for a label only if it *raises* the mean Dice
(``dice_after > dice_before``); a step that changes nothing is not kept.

:func:`case_step_dice` is the per-case part (``segcli evaluate`` runs it in its worker
processes, on the label maps it has already read); :func:`summarize_steps` averages it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcli.errors import DataError
from segcli.io.images import check_same_grid, read_label
from segcli.metrics import evaluate_case
from segcli.postprocess import postprocess_labels

__all__ = [
    "CaseStepDice",
    "StepComparison",
    "case_step_dice",
    "compare_postprocessing",
    "postprocessing_steps",
    "summarize_steps",
]


@dataclass(frozen=True)
class StepComparison:
    """Mean Dice of one label over ``n`` cases before and after one step."""

    step: str
    label: int
    dice_before: float
    dice_after: float
    n: int

    @property
    def delta(self) -> float:
        return self.dice_after - self.dice_before

    @property
    def keep(self) -> bool:
        """nnU-Net's rule: keep the step only if it raises the mean Dice."""
        return self.dice_after > self.dice_before


@dataclass(frozen=True)
class CaseStepDice:
    """One case's Dice per label before (``before``) and after each step (``after[step]``).

    Labels in neither the prediction nor the reference may be missing: they score 1 before
    and after (no step creates a label).
    """

    before: dict[int, float]
    after: dict[str, dict[int, float]]


def postprocessing_steps(min_size: int = 0) -> dict[str, dict[str, Any]]:
    """The steps to compare: name → keyword arguments of :func:`postprocess_labels`.

    ``largest_component`` and ``fill_holes`` always; ``min_size=N`` when ``min_size`` > 0
    (``inference.postprocess.min_size`` of the spec).
    """
    steps: dict[str, dict[str, Any]] = {"largest_component": {"largest_component": True}}
    if min_size > 0:
        steps[f"min_size={min_size}"] = {"min_size": int(min_size)}
    steps["fill_holes"] = {"fill_holes": True}
    return steps


def _dice(pred: np.ndarray, ref: np.ndarray, spacing: Any, labels: list[int]) -> dict[int, float]:
    scores = evaluate_case(pred, ref, spacing, labels=labels, metrics=["dice"])
    return {label: float(scores[label]["dice"]) for label in labels}


def case_step_dice(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int] | None,
    steps: dict[str, dict[str, Any]],
) -> CaseStepDice:
    """Dice per label of one case before and after each step.

    Args:
        pred, ref: integer label maps of one grid.
        spacing: mm per array axis.
        labels: labels to score and process; None = every non-zero value in ``pred`` or ``ref``.
        steps: name → keyword arguments of :func:`segcli.postprocess.postprocess_labels`.
    """
    if labels is None:
        present = np.union1d(np.unique(pred), np.unique(ref))
        labels = [int(v) for v in present if v != 0]
    wanted = [int(k) for k in labels]
    if not wanted:
        return CaseStepDice({}, {name: {} for name in steps})
    before = _dice(pred, ref, spacing, wanted)
    after = {
        name: _dice(postprocess_labels(pred, only=wanted, **options), ref, spacing, wanted)
        for name, options in steps.items()
    }
    return CaseStepDice(before, after)


def summarize_steps(
    cases: Sequence[CaseStepDice], labels: Sequence[int], steps: Sequence[str]
) -> list[StepComparison]:
    """Mean Dice per (step, label) over ``cases``: one row per step and label, in that order.

    Raises:
        ValueError: no cases or no labels.
    """
    if not cases:
        raise ValueError("no cases to compare")
    labels = [int(k) for k in labels]
    if not labels:
        raise ValueError("no labels to compare")
    before = np.array([[case.before.get(k, 1.0) for k in labels] for case in cases])
    rows = []
    for name in steps:
        after = np.array([[case.after[name].get(k, 1.0) for k in labels] for case in cases])
        for j, label in enumerate(labels):
            rows.append(
                StepComparison(
                    name, label, float(before[:, j].mean()), float(after[:, j].mean()), len(cases)
                )
            )
    return rows


def compare_postprocessing(
    pairs: dict[str, tuple[Path, Path]],
    labels: Sequence[int],
    steps: dict[str, dict[str, Any]],
) -> list[StepComparison]:
    """Mean Dice per (step, label) before and after, over every pair (in this process).

    Args:
        pairs: case → (prediction file, reference file), e.g. from
            :func:`segcli.io.dataset.pair_cases`.
        labels: foreground labels to score.
        steps: name → keyword arguments of :func:`segcli.postprocess.postprocess_labels`.

    Returns:
        One row per step and label, in step order then label order.

    Raises:
        DataError: unreadable files or a geometry mismatch (naming the case).
        ValueError: no pairs or no labels.
    """
    if not pairs:
        raise ValueError("no cases to compare")
    if not list(labels):
        raise ValueError("no labels to compare")
    cases = []
    for case, (pred_path, ref_path) in pairs.items():
        try:
            pred, pred_geometry = read_label(pred_path)
            ref, ref_geometry = read_label(ref_path)
        except DataError as exc:
            raise DataError(f"case '{case}': {exc}") from None
        check_same_grid(pred_geometry, ref_geometry, f"case '{case}': {pred_path.name}")
        cases.append(case_step_dice(pred, ref, ref_geometry.spacing, labels, steps))
    return summarize_steps(cases, labels, list(steps))
