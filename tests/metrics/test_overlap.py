"""Overlap counts and dice / iou / precision / recall."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes, arrays

from segcli.metrics.overlap import OverlapCounts, count_overlap, dice, iou, precision, recall

MASKS = arrays(np.bool_, array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=8))


def test_counts_and_values_on_a_hand_made_example() -> None:
    ref = np.zeros((6, 6), bool)
    ref[1:5, 1:5] = True  # 16 voxels
    pred = np.zeros((6, 6), bool)
    pred[1:5, 2:6] = True  # 16 voxels, 12 shared
    counts = count_overlap(pred, ref, voxel_volume_mm3=0.5)
    assert (counts.tp, counts.fp, counts.fn) == (12, 4, 4)
    assert (counts.ref_voxels, counts.pred_voxels, counts.voxel_volume_mm3) == (16, 16, 0.5)
    assert dice(counts) == pytest.approx(24 / 32)
    assert iou(counts) == pytest.approx(12 / 20)
    assert precision(counts) == pytest.approx(12 / 16)
    assert recall(counts) == pytest.approx(12 / 16)


@settings(max_examples=100, deadline=None)
@given(MASKS, MASKS)
def test_against_set_definitions(pred, ref) -> None:
    if pred.shape != ref.shape:
        ref = np.resize(ref, pred.shape)
    counts = count_overlap(pred, ref)
    tp, fp, fn = (pred & ref).sum(), (pred & ~ref).sum(), (~pred & ref).sum()
    assert (counts.tp, counts.fp, counts.fn) == (tp, fp, fn)
    if pred.any() or ref.any():
        assert dice(counts) == pytest.approx(2 * tp / (pred.sum() + ref.sum()))
        assert iou(counts) == pytest.approx(tp / (pred | ref).sum())
        assert iou(counts) == pytest.approx(dice(counts) / (2 - dice(counts)))
    assert 0 <= dice(counts) <= 1 and 0 <= iou(counts) <= dice(counts) + 1e-12
    swapped = count_overlap(ref, pred)
    assert dice(swapped) == dice(counts) and iou(swapped) == iou(counts)
    p, r = precision(counts), recall(swapped)
    assert (math.isnan(p) and math.isnan(r)) or p == pytest.approx(r)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # (dice, iou, precision, recall): both empty, prediction only, reference only
        (OverlapCounts(0, 0, 0), (1.0, 1.0, 1.0, 1.0)),
        (OverlapCounts(0, 5, 0), (0.0, 0.0, 0.0, math.nan)),
        (OverlapCounts(0, 0, 5), (0.0, 0.0, math.nan, 0.0)),
    ],
)
def test_empty_mask_conventions(counts: OverlapCounts, expected) -> None:
    got = (dice(counts), iou(counts), precision(counts), recall(counts))
    for value, want in zip(got, expected, strict=True):
        assert (math.isnan(value) and math.isnan(want)) or value == want
