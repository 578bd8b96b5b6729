"""Overlap metrics from one confusion count: dice, iou, precision, recall.

The counts are taken once per (case, label) and every overlap metric is a pure function of them.

    >>> import numpy as np
    >>> from segcli.metrics.overlap import count_overlap, dice
    >>> ref = np.zeros((8, 8), bool); ref[2:6, 2:6] = True
    >>> counts = count_overlap(np.roll(ref, 1, axis=0), ref, voxel_volume_mm3=1.0)
    >>> dice(counts)
    0.75

Empty-mask conventions (SPEC.md, "Metrics"): both masks empty → dice = iou = 1; exactly one
empty → dice = iou = 0.  Precision and recall follow the same rule where they are defined and
are NaN where they are not: precision = TP/(TP+FP) is 1 when both masks are empty and NaN when
only the prediction is empty (no predicted voxel to be right or wrong about); recall =
TP/(TP+FN) is 1 when both are empty and NaN when only the reference is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["OverlapCounts", "count_overlap", "dice", "iou", "precision", "recall"]


@dataclass(frozen=True)
class OverlapCounts:
    """Voxel counts of one binary comparison.

    Attributes:
        tp: voxels in both prediction and reference.
        fp: voxels in the prediction only.
        fn: voxels in the reference only.
        voxel_volume_mm3: volume of one voxel (mm³; mm² in 2D), for the volume metrics.
    """

    tp: int
    fp: int
    fn: int
    voxel_volume_mm3: float = 1.0

    @property
    def ref_voxels(self) -> int:
        """Number of reference voxels (TP + FN)."""
        return self.tp + self.fn

    @property
    def pred_voxels(self) -> int:
        """Number of predicted voxels (TP + FP)."""
        return self.tp + self.fp


def count_overlap(
    pred: npt.NDArray[np.bool_], ref: npt.NDArray[np.bool_], voxel_volume_mm3: float = 1.0
) -> OverlapCounts:
    """Count TP, FP and FN of two boolean masks of equal shape.

    Args:
        pred: predicted mask, any shape.
        ref: reference mask, same shape.
        voxel_volume_mm3: physical volume of one voxel.
    """
    pred_voxels = int(np.count_nonzero(pred))
    ref_voxels = int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref)) if pred_voxels and ref_voxels else 0
    return OverlapCounts(tp, pred_voxels - tp, ref_voxels - tp, float(voxel_volume_mm3))


def dice(counts: OverlapCounts) -> float:
    """2·TP / (2·TP + FP + FN); 1.0 when both masks are empty."""
    denominator = 2 * counts.tp + counts.fp + counts.fn
    return 1.0 if denominator == 0 else 2 * counts.tp / denominator


def iou(counts: OverlapCounts) -> float:
    """TP / (TP + FP + FN) (Jaccard index); 1.0 when both masks are empty."""
    denominator = counts.tp + counts.fp + counts.fn
    return 1.0 if denominator == 0 else counts.tp / denominator


def precision(counts: OverlapCounts) -> float:
    """TP / (TP + FP); 1.0 when both masks are empty, NaN when only the prediction is."""
    if counts.pred_voxels == 0:
        return 1.0 if counts.ref_voxels == 0 else float("nan")
    return counts.tp / counts.pred_voxels


def recall(counts: OverlapCounts) -> float:
    """TP / (TP + FN) (sensitivity); 1.0 when both masks are empty, NaN when only the reference is."""
    if counts.ref_voxels == 0:
        return 1.0 if counts.pred_voxels == 0 else float("nan")
    return counts.tp / counts.ref_voxels
