"""``segcli evaluate --compare-postprocessing``: would each postprocessing step raise Dice?

    >>> from segcli.io.dataset import pair_cases
    >>> from segcli.engine.postprocessing import compare_postprocessing, postprocessing_steps
    >>> rows = compare_postprocessing(pair_cases("pred", "ref"), [1, 2], postprocessing_steps(20))
    >>> [(r.step, r.label, r.dice_before, r.dice_after, r.keep) for r in rows]

Each step of :mod:`segcli.postprocess` is applied on its own to every evaluated prediction, and
the mean Dice per label over the cases is compared before and after.  nnU-Net's rule keeps a
step for a label only if it *raises* the mean Dice (``dice_after > dice_before``); a step that
changes nothing is not kept.  The results go to a rich table and to
``<stem>_postprocessing.csv`` next to the metric CSV (columns
:data:`POSTPROCESSING_COLUMNS`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcli.atomic import atomic_open
from segcli.engine.runtime import console, track
from segcli.errors import DataError
from segcli.io.images import check_same_grid, read_label
from segcli.metrics import evaluate_case
from segcli.postprocess import postprocess_labels

__all__ = [
    "POSTPROCESSING_COLUMNS",
    "StepComparison",
    "compare_postprocessing",
    "postprocessing_csv_path",
    "postprocessing_steps",
    "print_comparison",
    "write_comparison_csv",
]

POSTPROCESSING_COLUMNS = ("step", "label", "dice_before", "dice_after", "delta", "keep", "n")


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


def _dice(pred: np.ndarray, ref: np.ndarray, spacing: Any, labels: Sequence[int]) -> list[float]:
    scores = evaluate_case(pred, ref, spacing, labels=list(labels), metrics=["dice"])
    return [float(scores[label]["dice"]) for label in labels]


def compare_postprocessing(
    pairs: dict[str, tuple[Path, Path]],
    labels: Sequence[int],
    steps: dict[str, dict[str, Any]],
) -> list[StepComparison]:
    """Mean Dice per (step, label) before and after, over every pair.

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
    labels = [int(k) for k in labels]
    if not labels:
        raise ValueError("no labels to compare")
    before = np.zeros((len(pairs), len(labels)))
    after = {name: np.zeros((len(pairs), len(labels))) for name in steps}
    for i, (case, (pred_path, ref_path)) in enumerate(track(list(pairs.items()), "postprocessing")):
        try:
            pred, pred_geometry = read_label(pred_path)
            ref, ref_geometry = read_label(ref_path)
        except DataError as exc:
            raise DataError(f"case '{case}': {exc}") from None
        check_same_grid(pred_geometry, ref_geometry, f"case '{case}': {pred_path.name}")
        spacing = ref_geometry.spacing
        before[i] = _dice(pred, ref, spacing, labels)
        for name, options in steps.items():
            processed = postprocess_labels(pred, only=labels, **options)
            after[name][i] = _dice(processed, ref, spacing, labels)
    return [
        StepComparison(
            name,
            label,
            float(before[:, j].mean()),
            float(after[name][:, j].mean()),
            len(pairs),
        )
        for name in steps
        for j, label in enumerate(labels)
    ]


def postprocessing_csv_path(output_csv: str | Path) -> Path:
    """``metrics.csv`` → ``metrics_postprocessing.csv``."""
    output_csv = Path(output_csv)
    return output_csv.with_name(f"{output_csv.stem}_postprocessing{output_csv.suffix or '.csv'}")


def write_comparison_csv(path: str | Path, rows: Sequence[StepComparison]) -> Path:
    """Write the rows (columns :data:`POSTPROCESSING_COLUMNS`) atomically; returns the path."""
    path = Path(path)
    with atomic_open(path, "w", what="the comparison") as handle:
        writer = csv.writer(handle)
        writer.writerow(POSTPROCESSING_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row.step,
                    row.label,
                    repr(row.dice_before),
                    repr(row.dice_after),
                    repr(row.delta),
                    str(row.keep).lower(),
                    row.n,
                ]
            )
    return path


def print_comparison(rows: Sequence[StepComparison], label_names: dict[int, str]) -> None:
    """A rich table: step, label, mean Dice before → after, and nnU-Net's verdict."""
    from rich.markup import escape
    from rich.table import Table

    n = rows[0].n if rows else 0
    table = Table(
        title=f"postprocessing on {n} cases: mean Dice per label",
        caption="nnU-Net keeps a step for a label only if it raises the mean Dice",
    )
    for column, justify in (
        ("step", "left"),
        ("label", "left"),
        ("before", "right"),
        ("after", "right"),
        ("change", "right"),
        ("keep", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        name = label_names.get(row.label)
        table.add_row(
            escape(row.step),
            escape(f"{row.label}" + (f" ({name})" if name else "")),
            f"{row.dice_before:.4f}",
            f"{row.dice_after:.4f}",
            f"{row.delta:+.4f}",
            "[green]yes[/]" if row.keep else "no",
        )
    console.print(table)
