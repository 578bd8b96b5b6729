"""Connected components, lesion detection counts and volumes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes, arrays

from segcli.metrics.morphology import count_components, lesion_f1, vol_pred, vol_ref
from segcli.metrics.overlap import count_overlap


def test_crafted_lesions() -> None:
    """Three reference lesions: one hit fully, one hit by a single voxel, one missed; one
    prediction bridges nothing and is a false alarm; one prediction spans two references."""
    ref = np.zeros((12, 20), bool)
    ref[1:3, 1:3] = True  # lesion A: hit fully
    ref[1:3, 6:8] = True  # lesion B: hit by one voxel
    ref[8:10, 1:3] = True  # lesion C: missed
    ref[8:10, 12:14] = True  # lesions D and E, both touched by one predicted component
    ref[8:10, 16:18] = True
    pred = np.zeros_like(ref)
    pred[1:3, 1:3] = True
    pred[2, 7] = True
    pred[5, 10:12] = True  # false alarm
    pred[9, 12:18] = True  # one component across D and E
    c = count_components(pred, ref)
    assert (c.num_ref, c.num_pred) == (5, 4)
    assert (c.lesion_tp, c.lesion_fn, c.lesion_fp) == (4, 1, 1)
    assert lesion_f1(c) == pytest.approx(8 / 10)


def test_diagonal_neighbours_are_separate_components() -> None:
    """Face connectivity: voxels touching only at a corner (2D) or an edge (3D) do not join."""
    two_d = np.zeros((3, 3), bool)
    two_d[0, 0] = two_d[1, 1] = True
    three_d = np.zeros((3, 3, 3), bool)
    three_d[0, 0, 0] = three_d[0, 1, 1] = three_d[1, 1, 1] = True  # last two share a face
    assert count_components(two_d, two_d).num_ref == 2
    assert count_components(three_d, three_d).num_ref == 2


def test_no_components_anywhere_gives_f1_one() -> None:
    empty = np.zeros((4, 4), bool)
    c = count_components(empty, empty)
    assert (c.num_ref, c.num_pred, c.lesion_tp, c.lesion_fn, c.lesion_fp) == (0, 0, 0, 0, 0)
    assert lesion_f1(c) == 1.0


def test_only_false_alarms_gives_f1_zero() -> None:
    pred = np.zeros((4, 4), bool)
    pred[0, 0] = True
    c = count_components(pred, np.zeros_like(pred))
    assert (c.lesion_fp, lesion_f1(c)) == (1, 0.0)


@settings(max_examples=80, deadline=None)
@given(arrays(np.bool_, array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=7)))
def test_counts_are_consistent_and_swap(mask) -> None:
    other = np.roll(mask, 1, axis=0)
    c, swapped = count_components(other, mask), count_components(mask, other)
    assert c.lesion_tp + c.lesion_fn == c.num_ref
    assert 0 <= c.lesion_fp <= c.num_pred
    assert (swapped.num_ref, swapped.num_pred) == (c.num_pred, c.num_ref)
    assert (swapped.lesion_fn, swapped.lesion_fp) == (c.lesion_fp, c.lesion_fn)
    assert 0 <= lesion_f1(c) <= 1


def test_volumes_in_millilitres() -> None:
    ref = np.zeros((4, 10, 10), bool)
    ref[1:3, 2:7, 2:7] = True  # 50 voxels
    pred = np.zeros_like(ref)
    pred[1, 2:7, 2:4] = True  # 10 voxels
    counts = count_overlap(pred, ref, voxel_volume_mm3=2.5 * 0.8 * 0.8)
    assert vol_ref(counts) == pytest.approx(50 * 1.6 / 1000)
    assert vol_pred(counts) == pytest.approx(10 * 1.6 / 1000)
