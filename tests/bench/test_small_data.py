"""bench/small_data.py: the split and the verdict sentences come from the data, not from prose."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def small():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("small_data")
    finally:
        sys.path.remove(str(BENCH))


def _result(dice: np.ndarray) -> dict:
    cases = [f"case_{i:03d}" for i in range(dice.size)]
    return {"cases": cases, "dice": {"1": list(dice), "2": list(dice)}, "train_seconds": 60.0}


def test_the_sentence_says_where_augmentation_pays_from_the_intervals(small) -> None:
    rng = np.random.default_rng(0)
    base = {n: rng.uniform(0.6, 0.8, 42) for n in small.SIZES}
    noise = rng.normal(0, 0.01, 42)
    results = {}
    for n in small.SIZES:
        results[(n, "none")] = _result(base[n])
        gain = 0.05 if n == 10 else 0.0  # today's set pays at 10 cases only
        results[(n, "today")] = _result(base[n] + gain + noise)
        results[(n, "preset")] = _result(base[n] - 0.03)  # always costs Dice
    text = small.augmentation_sentence(results, ["none", "today", "preset"])
    assert re.search(r"at 10 cases today's set \+0\.0[45]\d \(pays\)", text)
    assert re.search(r"at 20 cases today's set [+-]0\.00\d \(no clear difference\)", text)
    assert "preset nnunet -0.030 (costs Dice)" in text
    assert text.endswith(
        "augmentation pays at 10 cases (today's set); at 20, 40 cases no setting beats "
        "training without augmentation."
    )


def test_the_small_sets_are_nested_and_disjoint_from_validation(small, hippocampus) -> None:
    split = small.make_split(hippocampus, quick=False)
    val, pool = set(split["val"]), set(split["pool"])
    assert len(val) == 42 and not val & pool
    assert set(split["half_a"]) | set(split["half_b"]) == pool
    assert not set(split["half_a"]) & set(split["half_b"])
    sets = [set(split["subsets"][str(n)]) for n in small.SIZES]
    assert [len(s) for s in sets] == list(small.SIZES)
    assert sets[0] < sets[1] < sets[2] <= set(split["half_b"])


def test_the_convergence_sentence_names_the_runs_still_rising(small) -> None:
    runs = {"a": {"val_dice_log": [0.80, 0.83]}, "b": {"val_dice_log": [0.85, 0.852]}}
    text = small.convergence_sentence(runs)
    assert "a (+0.030)" in text and "b (" not in text
    runs["a"]["val_dice_log"] = [0.83, 0.831]
    assert small.convergence_sentence(runs).startswith("Every run had converged")
