"""Per-(label, metric) summary rows: NaN excluded from statistics and counted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segcli.metrics.summary import SUMMARY_COLUMNS, summarize


def test_columns_match_spec() -> None:
    assert SUMMARY_COLUMNS == (
        "label",
        "metric",
        "mean",
        "std",
        "median",
        "min",
        "max",
        "n",
        "n_nan",
    )


def test_statistics_exclude_and_count_nan(rng: np.random.Generator) -> None:
    values = rng.random(7)
    per_case = {f"c{i}": {1: {"dice": float(v), "hd": float(v) * 10}} for i, v in enumerate(values)}
    per_case["c_missed"] = {1: {"dice": 0.0, "hd": math.nan}}
    rows = summarize(per_case, ["hd", "dice"])
    assert [(r.label, r.metric) for r in rows] == [(1, "hd"), (1, "dice")]
    hd_row, dice_row = rows
    kept = values * 10
    assert (hd_row.n, hd_row.n_nan) == (7, 1)
    assert hd_row.mean == pytest.approx(kept.mean())
    assert hd_row.std == pytest.approx(kept.std(ddof=1))
    assert hd_row.median == pytest.approx(np.median(kept))
    assert (hd_row.min, hd_row.max) == (pytest.approx(kept.min()), pytest.approx(kept.max()))
    with_zero = np.append(values, 0.0)
    assert (dice_row.n, dice_row.n_nan) == (8, 0)
    assert dice_row.mean == pytest.approx(with_zero.mean())


def test_all_nan_and_single_value() -> None:
    rows = summarize({"a": {2: {"hd": math.nan, "dice": 0.5}}}, ["hd", "dice"])
    hd_row, dice_row = rows
    assert (hd_row.n, hd_row.n_nan) == (0, 1) and math.isnan(hd_row.mean)
    assert dice_row.mean == 0.5 and dice_row.n == 1 and math.isnan(dice_row.std)


def test_rows_sorted_by_label() -> None:
    per_case = {"a": {3: {"dice": 1.0}, 1: {"dice": 0.0}}, "b": {1: {"dice": 0.5}}}
    rows = summarize(per_case, ["dice"])
    assert [(r.label, r.n, r.mean) for r in rows] == [(1, 2, 0.25), (3, 1, 1.0)]
