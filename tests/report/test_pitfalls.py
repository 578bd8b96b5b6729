"""Pitfall checks on hand-made runs: what each one finds, and what it must not flag."""

from __future__ import annotations

import math
from pathlib import Path

from segcli.report.data import Run
from segcli.report.pitfalls import MapScan, case_status, find_pitfalls


def _run(
    values: dict[str, dict[str, float]], voxels: dict[str, tuple[int, int]], ndim: int = 3
) -> Run:
    metrics = tuple(next(iter(values.values())))
    return Run(
        name="r",
        csv=Path("r.csv"),
        metrics=metrics,
        labels=(1,),
        cases=tuple(values),
        values={c: {1: v} for c, v in values.items()},
        meta={"ndim": ndim, "voxels": {c: {"1": list(n)} for c, n in voxels.items()}},
    )


def _titles(run: Run) -> list[str]:
    return [f.title for f in find_pitfalls(run, MapScan(done=True))]


def test_small_structures_are_flagged_by_size_and_large_ones_are_not() -> None:
    row = {"dice": 0.8, "hd95": 1.0}
    tiny = _run({f"c{i}": row for i in range(4)}, {f"c{i}": (30, 30) for i in range(4)})
    assert "label 1: small structures" in _titles(tiny)
    big = _run({f"c{i}": row for i in range(4)}, {f"c{i}": (200_000, 200_000) for i in range(4)})
    assert "label 1: small structures" not in _titles(big)
    # in 2D the same 30 pixels are a disc of radius ~3: still small
    flat = _run({f"c{i}": row for i in range(4)}, {f"c{i}": (30, 30) for i in range(4)}, ndim=2)
    text = [f.text for f in find_pitfalls(flat, MapScan(done=True)) if "small" in f.title]
    assert text and "disc of radius 3.1" in text[0]


def test_nan_reasons_come_from_the_voxel_counts() -> None:
    nan = math.nan
    run = _run(
        {
            "hit": {"dice": 0.9, "hd95": 1.0},
            "missed": {"dice": 0.0, "hd95": nan},
            "alarm": {"dice": 0.0, "hd95": nan},
            "empty": {"dice": 1.0, "hd95": 0.0},
        },
        {"hit": (10, 12), "missed": (10, 0), "alarm": (0, 5), "empty": (0, 0)},
    )
    assert [case_status(run, c, 1) for c in run.cases] == [
        "both",
        "missed",
        "false_alarm",
        "absent",
    ]
    findings = {f.title: f for f in find_pitfalls(run, MapScan(done=True))}
    left = findings["label 1: hd95 left out for 2 case(s)"]
    assert "1 missed" in left.text and "1 false alarm" in left.text
    assert set(left.cases) == {"missed", "alarm"}
    assert findings["label 1: structure in neither mask"].cases == ("empty",)


def test_without_counts_a_nan_distance_is_one_empty_mask() -> None:
    run = _run({"a": {"dice": 0.0, "hd95": math.nan}, "b": {"dice": 0.9, "hd95": 2.0}}, {})
    run.meta = {}
    assert case_status(run, "a", 1) == "one empty" and case_status(run, "b", 1) == "both"
    titles = [f.title for f in find_pitfalls(run, MapScan(gap="no folders"))]
    assert "not checked: holes and stray labels" in titles
