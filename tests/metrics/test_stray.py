"""Values outside the scored labels: ``segcli.metrics.stray.stray_labels``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.metrics.stray import StrayLabel, stray_labels


def test_counts_and_volumes_of_values_outside_the_labels() -> None:
    ref = np.zeros((6, 8), np.uint8)
    ref[1:3, 1:3] = 1
    ref[5, 0] = 9  # a value only the reference has
    pred = ref.copy()
    pred[5, 0] = 0
    pred[4:6, 5:8] = 7  # 6 voxels
    out = stray_labels(pred, ref, [1, 2], spacing=(0.5, 2.0))  # 1 mm² per voxel... ×1 mm
    assert out == [
        StrayLabel(7, 6, 0, pytest.approx(6e-3), 0.0),
        StrayLabel(9, 0, 1, 0.0, pytest.approx(1e-3)),
    ]
    assert stray_labels(pred, ref, [1, 7, 9], (1.0, 1.0)) == []


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    scored=st.sets(st.integers(1, 5), max_size=5),
)
def test_matches_a_brute_force_count(seed: int, scored: set[int]) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 6, size=(5, 4, 3))
    ref = rng.integers(0, 6, size=(5, 4, 3))
    spacing = (0.7, 1.1, 2.0)
    out = {s.label: s for s in stray_labels(pred, ref, scored, spacing)}
    expected = {
        int(v) for v in np.concatenate([pred.ravel(), ref.ravel()]) if v and v not in scored
    }
    assert set(out) == expected
    for value, s in out.items():
        p = sum(1 for v in pred.ravel() if v == value)
        r = sum(1 for v in ref.ravel() if v == value)
        assert (s.pred_voxels, s.ref_voxels) == (p, r)
        assert s.pred_ml == pytest.approx(p * 0.7 * 1.1 * 2.0 / 1000)
        assert s.ref_ml == pytest.approx(r * 0.7 * 1.1 * 2.0 / 1000)


def test_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="differ"):
        stray_labels(np.zeros((2, 2), int), np.zeros((2, 3), int), [1], (1.0, 1.0))
    with pytest.raises(ValueError, match="2 entries"):
        stray_labels(np.zeros((2, 2), int), np.zeros((2, 2), int), [1], (1.0,))
