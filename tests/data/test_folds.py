"""K-fold splits as nnU-Net makes them, and its splits_final.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segcli.data.folds import SPLITS_FILE, dataset_splits, kfold_splits
from segcli.errors import DataError, SpecError


@given(n=st.integers(2, 40), k=st.integers(2, 10), seed=st.integers(0, 2**31))
def test_every_case_is_validated_exactly_once(n: int, k: int, seed: int) -> None:
    if k > n:
        with pytest.raises(SpecError, match="data.folds"):
            kfold_splits([f"c{i}" for i in range(n)], k, seed)
        return
    names = [f"c{i:02d}" for i in range(n)]
    splits = kfold_splits(names[::-1], k, seed)  # the order given does not matter
    assert len(splits) == k
    vals = [v for _, v in splits]
    assert sorted(sum(vals, [])) == names
    sizes = sorted(len(v) for v in vals)
    assert sizes[-1] - sizes[0] <= 1
    for train, val in splits:
        assert sorted(train + val) == names and not set(train) & set(val)
        assert train == sorted(train) and val == sorted(val)


def test_same_folds_as_scikit_learn_kfold_as_nnunet_calls_it() -> None:
    sklearn = pytest.importorskip("sklearn.model_selection")
    import numpy as np

    names = [f"hippocampus_{i:03d}" for i in range(1, 40, 2)]
    expected = [
        (list(np.array(names)[tr]), list(np.array(names)[te]))
        for tr, te in sklearn.KFold(5, shuffle=True, random_state=12345).split(names)
    ]
    assert kfold_splits(names, 5) == expected


def test_the_split_depends_on_the_seed_and_is_reproducible() -> None:
    names = [f"c{i}" for i in range(20)]
    assert kfold_splits(names, 5) == kfold_splits(names, 5)
    assert kfold_splits(names, 5, seed=1) != kfold_splits(names, 5)


def test_splits_final_json_is_used_as_is(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    folds = [{"train": ["a", "b"], "val": ["c", "d"]}, {"train": ["c", "d"], "val": ["a", "b"]}]
    (tmp_path / SPLITS_FILE).write_text(json.dumps(folds))
    splits, source = dataset_splits(tmp_path, names, 2)
    assert splits == [(["a", "b"], ["c", "d"]), (["c", "d"], ["a", "b"])]
    assert source.endswith(SPLITS_FILE)
    with pytest.raises(SpecError, match="data.folds is 5 but .*2 folds"):
        dataset_splits(tmp_path, names, 5)


def test_splits_final_json_naming_an_unknown_case_is_refused(tmp_path: Path) -> None:
    (tmp_path / SPLITS_FILE).write_text(json.dumps([{"train": ["a", "zz"], "val": ["b"]}] * 2))
    with pytest.raises(DataError, match="case 'zz'"):
        dataset_splits(tmp_path, ["a", "b"], 2)
    (tmp_path / SPLITS_FILE).write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="nnU-Net's layout"):
        dataset_splits(tmp_path, ["a", "b"], 2)


def test_without_a_file_the_rule_is_used(tmp_path: Path) -> None:
    splits, source = dataset_splits(tmp_path, ["a", "b", "c"], 3)
    assert splits == kfold_splits(["a", "b", "c"], 3) and "12345" in source
