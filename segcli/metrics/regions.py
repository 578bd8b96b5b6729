"""Metrics per region (nnU-Net's regions, :mod:`segcli.labels`) from integer label maps.

A region's prediction and reference are the voxels whose label lies in the region's value
set, in both maps alike; every metric of :func:`segcli.metrics.evaluate_case` is then computed
on these two binary masks, so the definitions and empty-mask conventions are the same as for
labels.

    >>> import numpy as np
    >>> ref = np.zeros((8, 8), np.uint8); ref[2:6, 2:6] = 1; ref[3:5, 3:5] = 2
    >>> pred = ref.copy(); pred[3:5, 3:5] = 1   # the lesion missed, the organ complete
    >>> scores = evaluate_regions(pred, ref, (1.0, 1.0), {"organ": [1, 2], "lesion": [2]},
    ...                           metrics=["dice"])
    >>> scores["organ"]["dice"], scores["lesion"]["dice"]
    (1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from segcli.labels import Regions, encode_regions

if TYPE_CHECKING:
    from segcli.metrics import LabelResult

__all__ = ["evaluate_regions", "mean_foreground_dice", "region_label_results"]


def region_label_results(
    pred: npt.ArrayLike,
    ref: npt.ArrayLike,
    spacing: Sequence[float],
    regions: Regions,
    metrics: Sequence[str] | None = None,
    nsd_tolerance: float = 1.0,
) -> list[LabelResult]:
    """One :class:`~segcli.metrics.LabelResult` per region, ``label`` = region number ``k + 1``
    (channel order), for ``segcli evaluate``'s per-label tables and CSVs."""
    from segcli.metrics import evaluate_labels

    p = encode_regions(pred, regions)
    r = encode_regions(ref, regions)
    out = []
    for k in range(len(regions)):
        (result,) = evaluate_labels(
            p[k].astype(np.uint8), r[k].astype(np.uint8), spacing, [1], metrics, nsd_tolerance
        )
        out.append(replace(result, label=k + 1))
    return out


def evaluate_regions(
    pred: npt.ArrayLike,
    ref: npt.ArrayLike,
    spacing: Sequence[float],
    regions: Mapping[str, Sequence[int]],
    metrics: Sequence[str] | None = None,
    nsd_tolerance: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Region name → metric → value, for integer label maps ``pred`` and ``ref`` of one shape.

    Args:
        pred, ref: integer label maps ``(*spatial)``.
        spacing: mm per axis, array axis order.
        regions: ``{name: [label values]}`` as in the spec's ``regions`` key.
        metrics: metric names (default: those of :func:`segcli.metrics.evaluate_case`).
        nsd_tolerance: NSD tolerance in mm.
    """
    from segcli.metrics import evaluate_case

    values = tuple(tuple(int(v) for v in r) for r in regions.values())
    p = encode_regions(pred, values)
    r = encode_regions(ref, values)
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(regions):
        scores = evaluate_case(
            p[k].astype(np.uint8),
            r[k].astype(np.uint8),
            spacing,
            labels=[1],
            metrics=list(metrics) if metrics is not None else None,
            nsd_tolerance=nsd_tolerance,
        )
        out[name] = scores[1]
    return out


def mean_foreground_dice(
    pred: npt.ArrayLike,
    ref: npt.ArrayLike,
    spacing: Sequence[float],
    num_classes: int,
    regions: Regions | None = None,
) -> float:
    """Mean Dice over foreground labels ``1..num_classes-1`` (``regions`` None) or over regions.

    A label or region absent from both maps scores 1, as in ``segcli evaluate``.
    """
    from segcli.metrics import evaluate_case

    if regions is None:
        labels = list(range(1, num_classes))
        scores = evaluate_case(np.asarray(pred), np.asarray(ref), spacing, labels, ["dice"])
        return float(np.mean([scores[k]["dice"] for k in labels]))
    named = {str(k): list(r) for k, r in enumerate(regions)}
    region_scores = evaluate_regions(pred, ref, spacing, named, ["dice"])
    return float(np.mean([v["dice"] for v in region_scores.values()]))
