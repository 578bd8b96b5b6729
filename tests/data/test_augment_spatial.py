"""Rotation, scaling and elastic deformation: one resampling of a larger crop, right geometry,
image and label together, the anisotropy rule, no padding inside the patch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcli.data.augment import RandomSpatial, coarse_axis
from segcli.data.augment.spatial import nnunet_degrees
from segcli.data.sampling import grow_region, pad_region, patch_region


def _crop(draw, channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(channels, *draw.crop_size)).astype(np.float32)
    label = rng.integers(0, 3, size=draw.crop_size).astype(np.uint8)
    return image, label


def _source(draw, index: tuple[int, ...]) -> np.ndarray:
    """Where output voxel ``index`` samples the crop: centre + A·(offset + e) (the definition)."""
    patch = np.array(draw.patch_size, dtype=np.float64)
    source = np.array(index, dtype=np.float64) + np.array(draw.margin, dtype=np.float64)
    axes = list(draw.axes)
    offset = np.array([index[a] - (patch[a] - 1) / 2 for a in axes])
    if draw.displacement is not None:
        offset += draw.displacement[(slice(None), *[index[a] for a in axes])]
    centre = np.array([(patch[a] - 1) / 2 + draw.margin[a] for a in axes])
    source[axes] = centre + draw.matrix @ offset
    return source


def _linear_at(volume: np.ndarray, point: np.ndarray) -> float:
    """Multilinear interpolation of ``volume`` at ``point``, corner by corner (slow reference)."""
    base = np.floor(point).astype(int)
    frac = point - base
    total = 0.0
    for corner in itertools.product((0, 1), repeat=volume.ndim):
        idx = np.clip(base + corner, 0, np.array(volume.shape) - 1)
        weight = np.prod([f if c else 1 - f for f, c in zip(frac, corner, strict=True)])
        total += weight * float(volume[tuple(idx)])
    return total


@pytest.mark.parametrize(
    ("patch", "degrees", "scale"),
    [((7, 9), 37.0, 1.0), ((5, 6, 7), -23.0, 1.0), ((5, 6, 7), 12.0, 1.3), ((6, 8), 0.0, 0.8)],
)
def test_rotation_and_scaling_match_a_slow_reference(patch, degrees, scale) -> None:
    spatial = RandomSpatial(
        rotation_probability=1.0,
        degrees=(degrees, degrees),
        scaling_probability=1.0,
        scale=(scale, scale),
    )
    draw = spatial.draw(np.random.default_rng(0), patch)
    image, label = _crop(draw, channels=2)
    out, _ = spatial.apply(image, label, draw)
    assert out.shape == (2, *patch) and out.dtype == np.float32
    for index in itertools.product(*[range(p) for p in patch]):
        point = _source(draw, index)
        assert np.all(point >= -1e-4) and np.all(point <= np.array(draw.crop_size) - 1 + 1e-4)
        for c in range(2):
            assert out[(c, *index)] == pytest.approx(_linear_at(image[c], point), abs=1e-4)


def test_the_matrix_is_a_rotation_by_the_drawn_angle() -> None:
    # 2D: exactly the angle; 3D: orthonormal with determinant 1, times the scale
    draw = RandomSpatial(rotation_probability=1.0, degrees=(30, 30)).draw(
        np.random.default_rng(0), (8, 8)
    )
    t = math.radians(30)
    np.testing.assert_allclose(
        draw.matrix, [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
    )
    draw = RandomSpatial(rotation_probability=1, scaling_probability=1, scale=(1.2, 1.2)).draw(
        np.random.default_rng(1), (8, 8, 8)
    )
    r = draw.matrix / 1.2
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_a_quarter_turn_is_numpys_rot90_without_interpolation() -> None:
    spatial = RandomSpatial(rotation_probability=1.0, degrees=(90, 90))
    draw = spatial.draw(np.random.default_rng(0), (6, 6))
    assert draw.margin == (0, 0)  # a square turned by 90° needs no larger crop
    image, label = _crop(draw)
    out, out_label = spatial.apply(image, label, draw)
    # output (i, j) samples centre + R·(i − c, j − c) = (2c − j, i): a quarter turn clockwise
    np.testing.assert_allclose(out[0], np.rot90(image[0], -1), atol=1e-5)
    np.testing.assert_array_equal(out_label, np.rot90(label, -1))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("labels", ["onehot", "nearest"])
def test_image_and_label_move_together(dims: int, labels: str) -> None:
    """The image is the label one-hot encoded plus the voxel coordinates: after any draw, the
    resampled label equals the largest resampled indicator (one-hot) or the label at the
    rounded resampled coordinates (nearest) — the two were moved by the same transform."""
    patch = (9, 10, 8)[:dims]
    spatial = RandomSpatial(
        rotation_probability=1.0,
        scaling_probability=0.5,
        elastic_probability=0.5,
        sigma=(3, 4),
        magnitude=(0, 2),
        label_interpolation=labels,
    )
    rng = np.random.default_rng(3)
    for _ in range(6):
        draw = spatial.draw(rng, patch)
        shape = draw.crop_size
        label = np.zeros(shape, np.int64)
        centre = np.indices(shape) - (np.array(shape) - 1).reshape(-1, *[1] * dims) / 2
        radius = np.sqrt((centre**2).sum(0))
        label[radius < 4] = 2
        label[radius < 2] = 5
        label[(centre[0] > 2) & (radius < 4)] = 7
        onehot = np.stack([label == v for v in (0, 2, 5, 7)]).astype(np.float32)
        coords = np.indices(shape).astype(np.float32)
        out, out_label = spatial.apply(np.concatenate([onehot, coords]), label, draw)
        assert set(np.unique(out_label)) <= {0, 2, 5, 7}
        if labels == "onehot":
            np.testing.assert_array_equal(np.array([0, 2, 5, 7])[out[:4].argmax(0)], out_label)
        else:
            at = tuple(np.clip(np.rint(out[4:]).astype(int), 0, None))
            np.testing.assert_array_equal(label[at], out_label)


def test_scaling_zooms_about_the_centre_and_keeps_the_labels() -> None:
    """A ball of radius 6 at the crop centre: factor 0.5 shows it twice as large (radius 12
    fills more of the patch), 1.4 smaller; the centre voxel keeps its class; no new class."""
    volumes = {}
    for factor in (0.5, 1.0, 1.4):
        spatial = RandomSpatial(scaling_probability=1.0, scale=(factor, factor))
        draw = spatial.draw(np.random.default_rng(0), (31, 31, 31))
        shape = draw.crop_size
        offsets = np.indices(shape) - (np.array(shape) - 1).reshape(3, 1, 1, 1) / 2
        label = (np.sqrt((offsets**2).sum(0)) <= 6).astype(np.uint8) * 3
        _, out = spatial.apply(label[None].astype(np.float32), label, draw)
        assert set(np.unique(out)) == {0, 3} and out[15, 15, 15] == 3
        volumes[factor] = int((out == 3).sum())
    ball = 4 / 3 * math.pi * 6**3
    assert volumes[1.0] == pytest.approx(ball, rel=0.05)
    assert volumes[0.5] == pytest.approx(ball * 8, rel=0.05)
    assert volumes[1.4] == pytest.approx(ball / 1.4**3, rel=0.08)


@pytest.mark.parametrize("spacing", [(4.0, 1.0, 1.0), (0.8, 0.8, 3.5), (1.0, 5.0)])
def test_anisotropic_data_never_mix_the_coarse_axis(spacing) -> None:
    """Every output voxel of slice k comes from input slice k; in-plane the voxels move."""
    coarse = coarse_axis(spacing)
    assert coarse == int(np.argmax(spacing))
    patch = (6, 12, 10)[: len(spacing)]
    spatial = RandomSpatial(
        rotation_probability=1.0,
        scaling_probability=1.0,
        elastic_probability=1.0,
        sigma=(3, 4),
        magnitude=(1, 2),
        coarse_axis=coarse,
    )
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(5):
        draw = spatial.draw(rng, patch)
        assert coarse not in draw.axes and draw.margin[coarse] == 0
        coords = np.indices(draw.crop_size).astype(np.float32)
        out, _ = spatial.apply(coords, np.zeros(draw.crop_size, np.uint8), draw)
        expected = np.indices(patch)[coarse]
        # a neighbouring slice differs by 1: any weight on it would show (float32 rounding of
        # the in-plane weights aside)
        np.testing.assert_allclose(out[coarse], expected, atol=1e-5)
        moved += not np.allclose(np.delete(out, coarse, 0), np.delete(np.indices(patch), coarse, 0))
    assert moved == 5


def test_the_nnunet_rotation_rule() -> None:
    assert nnunet_degrees((40, 56, 40), None) == (-30, 30)
    assert nnunet_degrees((20, 160, 160), 0) == (-180, 180)  # in-plane only
    assert nnunet_degrees((64, 64), None) == (-180, 180)
    assert nnunet_degrees((32, 64), None) == (-15, 15)  # elongated 2D patch
    spatial = RandomSpatial(rotation_probability=1.0, coarse_axis=2)
    angles = []
    for seed in range(200):
        m = spatial.draw(np.random.default_rng(seed), (40, 40, 8)).matrix
        angles.append(math.degrees(math.atan2(m[1, 0], m[0, 0])))
    assert min(angles) < -150 and max(angles) > 150
    spatial3d = RandomSpatial(rotation_probability=1.0)
    for seed in range(50):
        m = spatial3d.draw(np.random.default_rng(seed), (16, 16, 16)).matrix
        # three rotations of at most 30° each: the total angle is at most 90°
        assert math.degrees(math.acos((np.trace(m) - 1) / 2)) <= 90 + 1e-6


def test_probabilities_zero_and_one() -> None:
    never = RandomSpatial(rotation_probability=0.0, scaling_probability=0.0, elastic_probability=0)
    always = RandomSpatial(rotation_probability=1.0)
    half = RandomSpatial(rotation_probability=0.5, scaling_probability=0.5)
    rng = np.random.default_rng(0)
    assert all(never.draw(rng, (8, 8)) is None for _ in range(50))
    assert all(always.draw(rng, (8, 8)) is not None for _ in range(50))
    fired = np.mean([half.draw(rng, (8, 8)) is not None for _ in range(2000)])
    assert fired == pytest.approx(0.75, abs=0.04)  # 1 − 0.5 · 0.5
    # a transform the spec does not configure draws nothing at all
    state = rng.bit_generator.state
    assert RandomSpatial().draw(rng, (8, 8)) is None
    assert rng.bit_generator.state == state


@settings(max_examples=25, deadline=None)
@given(
    patch=st.lists(st.integers(1, 9), min_size=2, max_size=3),
    seed=st.integers(0, 10_000),
    coarse=st.booleans(),
    cubic=st.booleans(),
)
def test_the_crop_holds_every_sample_and_is_no_larger_than_needed(patch, seed, coarse, cubic):
    spatial = RandomSpatial(
        rotation_probability=1.0,
        scaling_probability=0.7,
        elastic_probability=0.3,
        sigma=(2, 4),
        magnitude=(0, 3),
        coarse_axis=0 if coarse else None,
        interpolation="cubic" if cubic else "linear",
    )
    draw = spatial.draw(np.random.default_rng(seed), patch)
    if draw is None:  # no axis can move (every one a voxel thick, or coarse)
        assert all(p == 1 or (coarse and a == 0) for a, p in enumerate(patch))
        return
    points = np.array([_source(draw, i) for i in itertools.product(*[range(p) for p in patch])])
    support = np.zeros(len(patch))
    support[list(draw.axes)] = 2 if cubic else 0  # the coarse axis is never interpolated
    low, high = points.min(0) - support, points.max(0) + support
    crop = np.array(draw.crop_size)
    assert np.all(low >= -1e-4) and np.all(high <= crop - 1 + 1e-4)
    for axis, m in enumerate(draw.margin):
        if m > 0 and draw.displacement is None:  # the bound is tight for an affine map
            assert low[axis] < 1 + 1e-4 or high[axis] > crop[axis] - 2 - 1e-4


def test_no_padding_shows_inside_a_patch_away_from_the_border() -> None:
    """A constant image read through grow_region and resampled stays constant: the crop covers
    every sample (nnU-Net's fixed initial patch can show padded corners at scale 1.4)."""
    volume = np.full((1, 120, 120, 120), 7.0, np.float32)
    label = np.ones((120, 120, 120), np.uint8)
    spatial = RandomSpatial(
        rotation_probability=1.0, degrees=(-45, 45), scaling_probability=1.0, scale=(1.4, 1.4)
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        region, pad = patch_region((120, 120, 120), (24, 32, 24), rng, False, None)
        region = tuple(
            slice(s.start // 4 + 45, s.start // 4 + 45 + s.stop - s.start) for s in region
        )
        draw = spatial.draw(rng, (24, 32, 24))
        grown, grown_pad = grow_region((120, 120, 120), region, pad, draw.margin)
        assert grown_pad == [(0, 0)] * 3
        image = pad_region(volume[(slice(None), *grown)].copy(), grown_pad, "constant")
        out, out_label = spatial.apply(image, label[grown], draw)
        np.testing.assert_allclose(out, 7.0, atol=1e-5)
        assert np.all(out_label == 1)


def test_grow_region_pads_where_the_crop_leaves_the_image() -> None:
    # patch 4 wide at 1..5 of an axis of 10 → crop with margin 3 is -2..8: 2 padded before
    region, pad = grow_region((10, 3), (slice(1, 5), slice(0, 3)), [(0, 0), (1, 0)], (3, 2))
    assert region == (slice(0, 8), slice(0, 3)) and pad == [(2, 0), (3, 2)]


def test_elastic_field_is_smooth_and_bounded() -> None:
    spatial = RandomSpatial(elastic_probability=1.0, sigma=(6, 6), magnitude=(3, 3))
    draw = spatial.draw(np.random.default_rng(0), (30, 40, 30))
    field = draw.displacement
    assert field.shape == (3, 30, 40, 30)
    np.testing.assert_allclose(np.abs(field).reshape(3, -1).max(1), 3.0, rtol=1e-5)
    # smooth: neighbouring voxels differ by a small fraction of the largest displacement
    assert np.abs(np.diff(field, axis=1)).max() < 0.3 * 3.0
    # and it is a smoothed field, not a constant shift
    assert field.std() > 0.2
    assert ndimage.gaussian_filter(field[0], 2).std() > 0.5 * field[0].std()


@pytest.mark.parametrize(
    ("patch", "coarse"), [((1, 12, 16), None), ((6, 1, 12), 0), ((1, 1), None)]
)
def test_a_one_voxel_thick_axis_stays_and_the_rest_moves(patch, coarse) -> None:
    """3D data trained slice by slice (a patch one voxel thick): that axis, like a coarse one,
    is kept and the others turn as 2D data do (nnU-Net's 2d configuration: ±180°)."""
    spatial = RandomSpatial(rotation_probability=1.0, scaling_probability=1.0, coarse_axis=coarse)
    draw = spatial.draw(np.random.default_rng(0), patch)
    moving = [a for a in range(len(patch)) if a != coarse and patch[a] > 1]
    if not moving:
        assert draw is None  # nothing can move
        return
    assert list(draw.axes) == moving
    assert all(draw.margin[a] == 0 for a in range(len(patch)) if a not in moving)
    coords = np.indices(draw.crop_size).astype(np.float32)
    out, _ = spatial.apply(coords, np.zeros(draw.crop_size, np.uint8), draw)
    for a in range(len(patch)):
        if a not in moving:
            np.testing.assert_allclose(out[a], np.indices(patch)[a], atol=1e-5)
    if len(moving) == 2:  # the 2D rule: any angle, not 3D's ±30°
        angles = [
            abs(math.degrees(math.atan2(m[1, 0], m[0, 0])))
            for m in (spatial.draw(np.random.default_rng(s), patch).matrix for s in range(100))
        ]
        assert max(angles) > 150


def test_cubic_images_follow_the_same_geometry() -> None:
    """``interpolation: cubic`` (scipy's B-spline): a coordinate ramp comes out as the very
    coordinates the linear path samples (B-splines reproduce linear functions; the crop's margin
    keeps the boundary out of reach)."""
    kwargs = dict(rotation_probability=1.0, scaling_probability=1.0, elastic_probability=1.0,
                  sigma=(3, 4), magnitude=(0, 2))  # fmt: skip
    cubic = RandomSpatial(interpolation="cubic", **kwargs)
    linear = RandomSpatial(**kwargs)
    draw = cubic.draw(np.random.default_rng(4), (7, 9, 8))
    coords = np.indices(draw.crop_size).astype(np.float32)
    smooth, _ = cubic.apply(coords, np.zeros(draw.crop_size, np.uint8), draw)
    sharp, _ = linear.apply(coords, np.zeros(draw.crop_size, np.uint8), draw)
    np.testing.assert_allclose(smooth, sharp, atol=2e-3)
