"""Boundaries and surface distances against a brute-force all-pairs reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from scipy import ndimage
from scipy.spatial.distance import cdist

from segcli.metrics.surface import (
    SurfaceDistances,
    assd,
    boundary,
    hd,
    hd95,
    masd,
    nsd,
    surface_distances,
)

SPACING = st.floats(0.3, 3.0, allow_nan=False, allow_infinity=False)


@st.composite
def mask_pairs(
    draw: st.DrawFn, max_side: int = 9
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Two random boolean masks of one random 2D or 3D shape, and an anisotropic spacing."""
    shape = draw(array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=max_side))
    pred = draw(arrays(np.bool_, shape))
    ref = draw(arrays(np.bool_, shape))
    spacing = tuple(draw(SPACING) for _ in shape)
    return pred, ref, spacing


def brute_boundary(mask: np.ndarray) -> np.ndarray:
    """Face-connected erosion with the outside of the image as background (scipy's own)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def brute_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Every pairwise distance between the two boundaries; the directed minima."""
    a = np.argwhere(brute_boundary(pred)) * np.asarray(spacing)
    b = np.argwhere(brute_boundary(ref)) * np.asarray(spacing)
    pairwise = cdist(a, b)
    return pairwise.min(axis=1), pairwise.min(axis=0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8)))
def test_boundary_equals_face_connected_erosion_with_outside_as_background(mask) -> None:
    np.testing.assert_array_equal(boundary(mask), brute_boundary(mask))


@settings(max_examples=150, deadline=None)
@given(mask_pairs(), st.floats(0.0, 6.0))
def test_distance_metrics_match_brute_force(pair, tolerance) -> None:
    pred, ref, spacing = pair
    assume(pred.any() and ref.any())
    da, db = brute_distances(pred, ref, spacing)
    everything = np.concatenate([da, db])
    assume(np.all(np.abs(everything - tolerance) > 1e-9))  # no tie exactly at the tolerance
    for method in ("kdtree", "edt", "auto"):
        d = surface_distances(pred, ref, spacing, method=method)
        np.testing.assert_allclose(np.sort(d.pred_to_ref), np.sort(da), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.sort(d.ref_to_pred), np.sort(db), rtol=1e-10, atol=1e-12)
        assert hd(d) == pytest.approx(max(da.max(), db.max()), rel=1e-10)
        expected95 = max(np.quantile(da, 0.95), np.quantile(db, 0.95))
        assert hd95(d) == pytest.approx(expected95, rel=1e-10, abs=1e-12)
        assert assd(d) == pytest.approx(everything.sum() / everything.size, rel=1e-10, abs=1e-12)
        assert masd(d) == pytest.approx((da.mean() + db.mean()) / 2, rel=1e-10, abs=1e-12)
        within = (da <= tolerance).sum() + (db <= tolerance).sum()
        assert nsd(d, tolerance) == pytest.approx(within / everything.size)


@settings(max_examples=80, deadline=None)
@given(mask_pairs(), st.floats(0.0, 3.0), st.floats(0.0, 3.0))
def test_ordering_bounds_and_nsd_monotone(pair, t1, t2) -> None:
    pred, ref, spacing = pair
    assume(pred.any() and ref.any())
    d = surface_distances(pred, ref, spacing)
    assert 0 <= hd95(d) <= hd(d) + 1e-12
    assert 0 <= assd(d) <= hd(d) + 1e-12
    assert 0 <= masd(d) <= hd(d) + 1e-12
    low, high = sorted((t1, t2))
    assert 0 <= nsd(d, low) <= nsd(d, high) <= 1


@settings(max_examples=80, deadline=None)
@given(mask_pairs(), st.floats(0.25, 4.0))
def test_scaling_the_spacing_scales_every_distance(pair, factor) -> None:
    pred, ref, spacing = pair
    assume(pred.any() and ref.any())
    d1 = surface_distances(pred, ref, spacing)
    d2 = surface_distances(pred, ref, tuple(s * factor for s in spacing))
    for metric in (hd, hd95, assd, masd):
        assert metric(d2) == pytest.approx(metric(d1) * factor, rel=1e-9, abs=1e-12)
    tolerance = 1.3
    same = np.concatenate([d1.pred_to_ref, d1.ref_to_pred])
    assume(np.all(np.abs(same - tolerance) > 1e-9))
    assert nsd(d2, tolerance * factor) == pytest.approx(nsd(d1, tolerance))


@settings(max_examples=80, deadline=None)
@given(mask_pairs())
def test_swapping_prediction_and_reference(pair) -> None:
    pred, ref, spacing = pair
    d, swapped = surface_distances(pred, ref, spacing), surface_distances(ref, pred, spacing)
    for metric in (hd, hd95, assd, masd, nsd):
        a, b = metric(d), metric(swapped)
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.bool_, array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6)),
    st.integers(1, 4),
    st.data(),
    SPACING,
)
def test_translation_by_k_voxels_gives_hd_k_times_spacing(mask, k, data, step) -> None:
    """Any non-empty shape moved by k voxels along one axis (away from the border): hd = k·s."""
    assume(mask.any())
    axis = data.draw(st.integers(0, mask.ndim - 1))
    spacing = [data.draw(SPACING) for _ in range(mask.ndim)]
    spacing[axis] = step
    canvas = np.zeros(tuple(n + 2 * k + 2 for n in mask.shape), dtype=bool)
    inner = tuple(slice(k + 1, k + 1 + n) for n in mask.shape)
    canvas[inner] = mask
    moved = np.roll(canvas, k, axis=axis)
    d = surface_distances(moved, canvas, spacing)
    assert hd(d) == pytest.approx(k * step, rel=1e-9)


def test_square_shifted_along_anisotropic_axis() -> None:
    ref = np.zeros((12, 12), bool)
    ref[3:8, 3:8] = True
    pred = np.roll(ref, 2, axis=1)  # 2 voxels of 0.5 mm along x
    d = surface_distances(pred, ref, (2.0, 0.5))
    assert hd(d) == pytest.approx(1.0)
    # top/bottom rows partly coincide (0 mm), their moved ends are 0.5 or 1.0 mm away, the
    # left/right edges 1.0 mm: so nothing is farther than 1.0 mm and some points are exactly 0.5
    da, db = brute_distances(pred, ref, (2.0, 0.5))
    assert assd(d) == pytest.approx(np.concatenate([da, db]).mean())
    assert nsd(d, 0.49) < nsd(d, 0.5) <= nsd(d, 1.0) == 1.0


def test_kdtree_and_distance_transform_agree_on_a_large_smooth_mask() -> None:
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.standard_normal((40, 48, 44)), 3)
    ref = field > 0
    pred = ndimage.binary_dilation(ref) & (rng.random(ref.shape) > 0.01)
    spacing = (2.5, 0.7, 0.9)
    a = surface_distances(pred, ref, spacing, method="kdtree")
    b = surface_distances(pred, ref, spacing, method="edt")
    np.testing.assert_allclose(a.pred_to_ref, b.pred_to_ref, rtol=1e-10)
    np.testing.assert_allclose(a.ref_to_pred, b.ref_to_pred, rtol=1e-10)


def test_empty_masks() -> None:
    empty = np.zeros((5, 5), bool)
    full = np.zeros((5, 5), bool)
    full[1:4, 1:4] = True
    both = surface_distances(empty, empty, (1.0, 1.0))
    assert both.both_empty and not both.one_empty
    assert (hd(both), hd95(both), assd(both), masd(both), nsd(both)) == (0.0, 0.0, 0.0, 0.0, 1.0)
    for pred, ref in ((empty, full), (full, empty)):
        one = surface_distances(pred, ref, (1.0, 1.0))
        assert one.one_empty
        assert all(np.isnan(f(one)) for f in (hd, hd95, assd, masd))
        assert nsd(one) == 0.0


def test_distances_are_read_only() -> None:
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    d = surface_distances(mask, mask, (1.0, 1.0))
    assert isinstance(d, SurfaceDistances)
    with pytest.raises(ValueError):
        d.pred_to_ref[0] = 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"pred": np.zeros((3, 3), bool), "ref": np.zeros((3, 4), bool), "spacing": (1, 1)},
            "shape",
        ),
        (
            {"pred": np.zeros((3, 3), bool), "ref": np.zeros((3, 3), bool), "spacing": (1,)},
            "spacing",
        ),
        (
            {"pred": np.zeros((3, 3), bool), "ref": np.zeros((3, 3), bool), "spacing": (1, 0)},
            "spacing",
        ),
        (
            {
                "pred": np.zeros((3, 3), bool),
                "ref": np.zeros((3, 3), bool),
                "spacing": (1, 1),
                "method": "fast",
            },
            "method",
        ),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        surface_distances(**kwargs)


def test_negative_tolerance_is_rejected() -> None:
    mask = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="tolerance"):
        nsd(surface_distances(mask, mask, (1, 1)), -1.0)
