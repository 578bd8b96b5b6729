"""What ``segcli evaluate`` scores: the labels given, the dataset's labels, or the spec's regions.

>>> from segcli.engine.evaluate_labels import scored_labels
>>> wanted, names, regions = scored_labels([1, 2], None, None, {0: "bg", 1: "a", 2: "b"})
>>> wanted, regions
((1, 2), None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segcli.errors import SpecError

__all__ = ["check_label_values", "check_regions", "scored_labels"]


def scored_labels(
    labels: Sequence[int] | None,
    regions: Mapping[str, Sequence[int]] | None,
    postprocessing: dict[str, dict[str, Any]] | None,
    label_names: dict[int, str],
) -> tuple[tuple[int, ...] | None, dict[int, str], tuple[tuple[int, ...], ...] | None]:
    """The labels evaluate scores, their names, and the regions' label-value sets.

    Regions (name → label values) are scored as numbers 1..K named after the regions; else
    ``labels`` as given; else the foreground labels of ``label_names`` (dataset.json next to
    the references), or None (every label a case holds) when it names none.

    Args:
        labels: ``--labels`` / ``evaluation.labels``, or None.
        regions: the spec's ``regions``, or None.
        postprocessing: the postprocessing steps compared, or None (not with regions).
        label_names: label → name from dataset.json (may be empty).

    Returns:
        ``(wanted, label_names, region_values)``.

    Raises:
        SpecError: see :func:`check_regions` and :func:`check_label_values`.
    """
    region_values = check_regions(regions, labels, postprocessing)
    if regions is not None:
        wanted: tuple[int, ...] | None = tuple(range(1, len(regions) + 1))
        label_names = {k + 1: name for k, name in enumerate(regions)}
    elif labels is not None:
        wanted = check_label_values(labels)
    else:
        wanted = tuple(k for k in sorted(label_names) if k > 0) or None
    return wanted, label_names, region_values


def check_regions(
    regions: Mapping[str, Sequence[int]] | None,
    labels: Sequence[int] | None,
    postprocessing: dict[str, dict[str, Any]] | None,
) -> tuple[tuple[int, ...], ...] | None:
    """The regions' label-value sets (None without regions), checked, and that nothing asks
    for labels beside them.

    Raises:
        SpecError: a malformed region, labels given too, or a postprocessing comparison.
    """
    if regions is None:
        return None
    from segcli.labels import as_regions, region_problems

    values = as_regions(regions)
    problems = region_problems(values, list(regions))
    if problems:
        raise SpecError("regions: " + "; ".join(problems))
    if labels is not None:
        raise SpecError(
            "--labels / evaluation.labels: the spec has regions, which evaluate scores instead "
            "of labels; drop the labels (or evaluate without the spec to score labels)"
        )
    if postprocessing is not None:
        raise SpecError("--compare-postprocessing compares labels; it does not work with regions")
    return values


def check_label_values(labels: Sequence[int]) -> tuple[int, ...]:
    """``labels`` as sorted distinct ints.

    Raises:
        SpecError: a value that is not an integer >= 1, or no label at all.
    """
    out = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or label < 1:
            raise SpecError(f"labels must be integers >= 1 (0 is background), got {label!r}")
        out.append(int(label))
    if not out:
        raise SpecError("labels: give at least one label, e.g. --labels 1")
    return tuple(sorted(set(out)))
