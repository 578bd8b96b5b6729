"""``segcli preprocess``: the spec's dataset into the preprocessing cache, once.

    >>> from segcli.engine.preprocess import preprocess_dataset
    >>> report = preprocess_dataset(load("exp.yaml"), workers=2)
    >>> report.built, report.reused, report.folder

Every labelled case of ``data.root`` (training and validation alike, so every split, fold and
study variant finds its cases) is cropped, resampled and indexed by
:func:`segcli.data.cache.build_cache`; cases already cached and unchanged are reused.
``segcli train`` and ``segcli plan --budget-minutes`` call the same function for the cases they
need, so running this first only moves the work (e.g. onto a machine with more cores).
"""

from __future__ import annotations

from typing import Any

from segcli.config import Experiment
from segcli.engine.runtime import info, track
from segcli.errors import SpecError

__all__ = ["preprocess_dataset", "verify_cache"]


def preprocess_dataset(exp: Experiment, workers: int | None = None) -> Any:
    """Build or refresh the cache of every case of ``exp.data.root``; the CacheReport.

    Raises:
        SpecError: the spec has ``data.synthetic`` (generated in memory, nothing to cache).
        DataError: see :func:`segcli.data.cache.build_cache`.
    """
    from segcli.data.loaders import list_case_names, preprocess, resolve_spacing

    if exp.data.synthetic is not None:
        raise SpecError(
            "data.synthetic is generated in memory at every run; `segcli preprocess` caches "
            "datasets on disk (set data.root)"
        )
    names = list_case_names(exp.data, exp.seed)
    spacing = resolve_spacing(exp.data, exp.seed)
    return preprocess(
        exp.data,
        names,
        spacing,
        workers=workers,
        progress=lambda items: track(items, "preprocessing"),
        on_wait=lambda: info("another segcli process is building this cache; waiting for it"),
    )


def verify_cache(report: Any) -> list[str]:
    """Check every cached file's CRC-32 (reads them all); the names of damaged cases."""
    from segcli.errors import DataError

    damaged = []
    for name, case in track(list(report.cases.items()), "verifying"):
        try:
            case.load(verify=True)
        except (DataError, OSError, ValueError):
            damaged.append(name)
    return damaged
