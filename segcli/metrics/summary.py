"""Per-case metric values → one summary row per (label, metric).

    >>> from segcli.metrics.summary import summarize
    >>> per_case = {"a": {1: {"dice": 0.8}}, "b": {1: {"dice": 0.6}}, "c": {1: {"dice": float("nan")}}}
    >>> row = summarize(per_case, ["dice"])[0]
    >>> row.mean, row.n, row.n_nan
    (0.7, 2, 1)

NaN values (a distance when exactly one mask is empty, precision/recall where undefined) are
left out of every statistic and counted in ``n_nan``; ``n`` counts the values used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields

import numpy as np

__all__ = ["SUMMARY_COLUMNS", "SummaryRow", "summarize"]


@dataclass(frozen=True)
class SummaryRow:
    """Statistics of one metric of one label over cases (NaN values excluded).

    Attributes:
        label: label value.
        metric: metric name.
        mean, std, median, min, max: over the non-NaN values; ``std`` is the sample standard
            deviation (ddof=1, as pandas), NaN with fewer than two values; all NaN when ``n`` is 0.
        n: number of non-NaN values.
        n_nan: number of NaN values (left out).
    """

    label: int
    metric: str
    mean: float
    std: float
    median: float
    min: float
    max: float
    n: int
    n_nan: int

    def as_tuple(self) -> tuple[int | str | float, ...]:
        return astuple(self)


#: Column names of the summary CSV, in order.
SUMMARY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SummaryRow))


def summarize(
    results: Mapping[str, Mapping[int, Mapping[str, float]]], metrics: Sequence[str]
) -> list[SummaryRow]:
    """Summarise ``{case: {label: {metric: value}}}`` per (label, metric).

    Args:
        results: per-case values; a (case, label) without a metric is treated as missing (not NaN).
        metrics: metric names, in output order.

    Returns:
        Rows sorted by label, then in the order of ``metrics``.
    """
    labels = sorted({label for per_label in results.values() for label in per_label})
    rows = []
    for label in labels:
        for metric in metrics:
            values = np.array(
                [
                    per_label[label][metric]
                    for per_label in results.values()
                    if label in per_label and metric in per_label[label]
                ],
                dtype=np.float64,
            )
            nan = np.isnan(values)
            kept = values[~nan]
            n = int(kept.size)
            if n == 0:
                stats = (math.nan,) * 5
            else:
                std = float(np.std(kept, ddof=1)) if n > 1 else math.nan
                stats = (
                    float(np.mean(kept)),
                    std,
                    float(np.median(kept)),
                    float(kept.min()),
                    float(kept.max()),
                )
            rows.append(SummaryRow(int(label), metric, *stats, n, int(nan.sum())))
    return rows
