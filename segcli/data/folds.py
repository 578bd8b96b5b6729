"""K-fold cross-validation splits, made as nnU-Net v2 makes them (or read from its file).

    >>> from segcli.data.folds import kfold_splits, dataset_splits
    >>> splits = kfold_splits(["a", "b", "c", "d", "e"], k=5)      # [(train, val), ...]
    >>> splits, source = dataset_splits("data/Task04", names, k=5)  # splits_final.json if there

nnU-Net's rule (``nnunetv2.utilities.crossval_split.generate_crossval_split``): the case names
sorted, shuffled by ``numpy.random.RandomState(12345)`` (scikit-learn's ``KFold(shuffle=True,
random_state=12345)``), cut into ``k`` consecutive chunks — the first ``n mod k`` one case
longer — each chunk one fold's validation cases and the rest its training cases, both listed
in name order.  The same names give the same folds as nnU-Net's ``splits_final.json``, so
fold ``k`` of segcli and of nnU-Net hold out the same cases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcli.errors import DataError, SpecError

__all__ = ["NNUNET_SPLIT_SEED", "SPLITS_FILE", "dataset_splits", "kfold_splits"]

#: nnU-Net v2's seed for its cross-validation split
NNUNET_SPLIT_SEED = 12345

#: nnU-Net's split file; in a dataset folder it is used as is
SPLITS_FILE = "splits_final.json"

Split = tuple[list[str], list[str]]


def kfold_splits(names: Sequence[str], k: int, seed: int = NNUNET_SPLIT_SEED) -> list[Split]:
    """``k`` (train, validation) splits of ``names``: every case validated exactly once.

    Raises:
        SpecError: ``k`` below 2 or above the number of cases.
    """
    ordered = sorted(names)
    n = len(ordered)
    if k < 2 or k > n:
        raise SpecError(f"data.folds: {k} folds need 2 to {n} cases per fold split (got {n})")
    index = np.arange(n)
    np.random.RandomState(seed).shuffle(index)
    sizes = np.full(k, n // k, dtype=int)
    sizes[: n % k] += 1
    out: list[Split] = []
    start = 0
    for size in sizes:
        held = set(index[start : start + size].tolist())
        start += size
        out.append(
            ([ordered[i] for i in range(n) if i not in held], [ordered[i] for i in sorted(held)])
        )
    return out


def read_splits_file(path: Path, names: Sequence[str]) -> list[Split]:
    """nnU-Net's ``splits_final.json`` (``[{"train": [...], "val": [...]}, ...]``), checked.

    Raises:
        DataError: unreadable file, another layout, or a case name the dataset does not have.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the cross-validation splits ({exc})") from None
    ok = (
        isinstance(raw, list)
        and raw
        and all(
            isinstance(s, dict)
            and isinstance(s.get("train"), list)
            and isinstance(s.get("val"), list)
            for s in raw
        )
    )
    if not ok:
        raise DataError(
            f'{path}: expected nnU-Net\'s layout, a list of {{"train": [...], "val": [...]}}'
        )
    known = set(names)
    out: list[Split] = []
    for i, split in enumerate(raw):
        for key in ("train", "val"):
            unknown = [str(n) for n in split[key] if str(n) not in known]
            if unknown:
                raise DataError(
                    f"{path}: fold {i} names case '{unknown[0]}' in '{key}', which the dataset "
                    f"does not have ({len(known)} cases)"
                )
        out.append(([str(n) for n in split["train"]], [str(n) for n in split["val"]]))
    return out


def dataset_splits(
    root: str | Path | None, names: Sequence[str], k: int
) -> tuple[list[Split], str]:
    """The folds of a dataset: its ``splits_final.json`` when it has one, else
    :func:`kfold_splits`; and where they come from (for the console and ``split.json``).

    Raises:
        SpecError: ``data.folds`` disagrees with the file's number of folds.
        DataError: a bad split file.
    """
    path = Path(root) / SPLITS_FILE if root is not None else None
    if path is not None and path.is_file():
        splits = read_splits_file(path, names)
        if len(splits) != k:
            raise SpecError(
                f"data.folds is {k} but {path} holds {len(splits)} folds; set data.folds to "
                f"{len(splits)} (or remove the file to split anew)"
            )
        return splits, str(path)
    return kfold_splits(names, k), f"nnU-Net's {k}-fold rule (seed {NNUNET_SPLIT_SEED})"
