"""Label values outside the scored set: found, counted and measured (a pure function).

    >>> import numpy as np
    >>> from segcli.metrics.stray import stray_labels
    >>> ref = np.zeros((4, 4), np.uint8); ref[1, 1] = 1
    >>> pred = ref.copy(); pred[3, 3] = 7
    >>> stray_labels(pred, ref, labels=[1], spacing=(0.5, 2.0))
    [StrayLabel(label=7, pred_voxels=1, ref_voxels=0, pred_ml=0.001, ref_ml=0.0)]

When the labels to score come from ``--labels``, the spec or dataset.json, a value found in a
prediction (or a reference) that is not among them is scored by no row of the metric table;
:mod:`segcli.engine.evaluate` uses this to warn, naming the case and the volume, and to add
rows for it to the per-case CSV (left out of the summary).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["StrayLabel", "stray_labels"]


@dataclass(frozen=True)
class StrayLabel:
    """A non-zero value of a case that is not among the labels scored.

    Attributes:
        label: the value.
        pred_voxels, ref_voxels: its voxels in the prediction and in the reference.
        pred_ml, ref_ml: the same as volumes in mL (voxel count × voxel volume).
    """

    label: int
    pred_voxels: int
    ref_voxels: int
    pred_ml: float
    ref_ml: float


def _counts(label_map: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(label_map, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0}


def stray_labels(
    pred: npt.ArrayLike,
    ref: npt.ArrayLike,
    labels: Iterable[int],
    spacing: Sequence[float],
) -> list[StrayLabel]:
    """Non-zero values of ``pred`` or ``ref`` that are not in ``labels``, ascending.

    Args:
        pred, ref: integer label maps of one shape (0 = background).
        labels: the labels scored.
        spacing: voxel size in mm per axis (for the volumes).

    Returns:
        One :class:`StrayLabel` per value outside ``labels`` (empty when there is none).

    Raises:
        ValueError: shapes differ or ``spacing`` has the wrong number of entries.
    """
    pred_map, ref_map = np.asarray(pred), np.asarray(ref)
    if pred_map.shape != ref_map.shape:
        raise ValueError(f"prediction {pred_map.shape} and reference {ref_map.shape} differ")
    if len(spacing) != pred_map.ndim:
        raise ValueError(f"spacing {list(spacing)} needs {pred_map.ndim} entries")
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    scored = {int(k) for k in labels}
    in_pred, in_ref = _counts(pred_map), _counts(ref_map)
    return [
        StrayLabel(
            value,
            in_pred.get(value, 0),
            in_ref.get(value, 0),
            in_pred.get(value, 0) * voxel_ml,
            in_ref.get(value, 0) * voxel_ml,
        )
        for value in sorted((set(in_pred) | set(in_ref)) - scored)
    ]
