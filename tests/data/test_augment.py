"""Augmentation keeps image and label aligned and does what it says."""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
import pytest

from segcli.config.schema import AugmentSpec
from segcli.data.augment import (
    RandomFlip,
    RandomGamma,
    RandomIntensity,
    RandomRot90,
    build_augment,
)


def _marked(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random label and an image whose channels encode it (ch0 = label, ch1 = −2·label)."""
    label = np.random.default_rng(seed).integers(0, 5, size=shape).astype(np.uint8)
    image = np.stack([label, -2.0 * label]).astype(np.float32)
    return image, label


@pytest.mark.parametrize("shape", [(6, 6), (5, 7), (4, 4, 4), (3, 4, 4)])
def test_spatial_augmentation_keeps_image_and_label_aligned(shape: tuple[int, ...]) -> None:
    augment = build_augment(AugmentSpec(flip=True, rotate90=True, probability=0.7), len(shape))
    image, label = _marked(shape)
    changed = 0
    for seed in range(40):
        out_img, out_lab = augment(image, label, np.random.default_rng(seed))
        assert out_img.shape[1:] == out_lab.shape
        np.testing.assert_array_equal(out_img[0], out_lab)
        np.testing.assert_array_equal(out_img[1], -2.0 * out_lab)
        assert sorted(out_lab.ravel()) == sorted(label.ravel())  # a permutation of voxels
        changed += not np.array_equal(out_lab, label)
    assert changed > 20  # the transforms do fire


def test_flip_probability_one_flips_every_axis_and_zero_none() -> None:
    image, label = _marked((3, 4, 5))
    out_img, out_lab = RandomFlip(1.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_lab, label[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(out_img, image[:, ::-1, ::-1, ::-1])
    out_img, out_lab = RandomFlip(0.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_lab, label)


def test_flip_axes_are_independent() -> None:
    image, label = _marked((4, 5))
    seen = set()
    for seed in range(60):
        _, out = RandomFlip(0.5)(image, label, np.random.default_rng(seed))
        seen.add(
            next(
                (a, b)
                for a in (False, True)
                for b in (False, True)
                if np.array_equal(out, label[:: -1 if a else 1, :: -1 if b else 1])
            )
        )
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


@pytest.mark.parametrize("shape", [(5, 5), (4, 4, 4), (4, 4, 6), (3, 5, 3)])
def test_rot90_rotates_in_a_square_plane_only(shape: tuple[int, ...]) -> None:
    image, label = _marked(shape)
    planes = [(a, b) for a, b in combinations(range(len(shape)), 2) if shape[a] == shape[b]]
    rotations = {(plane, k): np.rot90(label, k, axes=plane) for plane in planes for k in (1, 2, 3)}
    seen = set()
    for seed in range(80):
        out_img, out_lab = RandomRot90(1.0)(image, label, np.random.default_rng(seed))
        assert out_lab.shape == label.shape
        np.testing.assert_array_equal(out_img[0], out_lab)
        match = [key for key, rotated in rotations.items() if np.array_equal(out_lab, rotated)]
        assert match, "output is not a 90° rotation in an equal-size plane"
        seen.update(match)
    assert {k for _, k in seen} == {1, 2, 3}
    assert {p for p, _ in seen} == set(planes)


def test_rot90_without_a_square_plane_is_identity() -> None:
    image, label = _marked((3, 4, 5))
    out_img, out_lab = RandomRot90(1.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_lab, label)
    np.testing.assert_array_equal(out_img, image)


def test_intensity_is_an_affine_map_per_channel_and_leaves_the_label() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 8, 8)).astype(np.float32)
    image[1] = image[1] * 3 + 5
    label = rng.integers(0, 2, size=(8, 8)).astype(np.uint8)
    for seed in range(20):
        out, out_lab = RandomIntensity(1.0)(image, label, np.random.default_rng(seed))
        assert out_lab is label
        for c in range(2):
            scale, offset = np.polyfit(image[c].ravel(), out[c].ravel(), 1)
            assert 0.9 - 1e-5 <= scale <= 1.1 + 1e-5
            assert abs(offset) <= 0.1 * image[c].std() + 1e-4
    unchanged, _ = RandomIntensity(0.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(unchanged, image)
    assert not np.shares_memory(RandomIntensity(1.0)(image, label, rng)[0], image)


def test_every_field_of_a_built_transform_comes_from_the_spec() -> None:
    """Issue 26: no transform has a knob that no spec can reach.  Every field of every transform
    ``build_augment`` makes is set from the spec (or from the spacing) — here all to values
    other than the dataclass defaults, so a field the builder forgot keeps its default."""
    spec = AugmentSpec(
        flip=True,
        rotate90=True,
        intensity=True,
        probability=0.3,
        flip_axes=[2, 1],
        rotation={"probability": 0.31, "degrees": [-10, 20]},
        scaling={"probability": 0.32, "factor": [0.8, 1.2]},
        elastic={"probability": 0.33, "sigma": [5, 6], "magnitude": [1, 2]},
        interpolation="cubic",
        label_interpolation="nearest",
        noise={"probability": 0.34, "std": [0.2, 0.3], "channel_probability": 0.9},
        blur={"probability": 0.35, "sigma": [0.1, 0.2], "channel_probability": 0.8},
        brightness={"probability": 0.36, "factor": [0.5, 2], "channel_probability": 0.7},
        contrast={"probability": 0.37, "factor": [0.5, 2], "channel_probability": 0.6},
        low_resolution={"probability": 0.38, "zoom": [0.3, 0.4], "channel_probability": 0.4},
        inverted_gamma={"probability": 0.39, "gamma": [0.5, 2], "channel_probability": 0.3},
        gamma={"probability": 0.41, "gamma": [0.6, 3], "channel_probability": 0.2},
    )
    built = build_augment(spec, 3, spacing=(1.0, 1.0, 4.0))
    assert built.spatial is not None
    for transform in (*built.transforms, built.spatial):
        for f in dataclasses.fields(transform):
            if isinstance(transform, RandomGamma) and f.name == "inverted":
                continue  # the one of the two gammas that is not inverted keeps False
            assert getattr(transform, f.name) != f.default, (type(transform).__name__, f.name)
    assert [f.name for f in dataclasses.fields(RandomIntensity)] == ["probability"]


def test_build_augment_follows_the_spec() -> None:
    none = build_augment(AugmentSpec(flip=False), 2)
    assert len(none) == 0
    image, label = _marked((4, 4))
    out_img, out_lab = none(image, label, np.random.default_rng(0))
    assert out_img is image and out_lab is label
    full = build_augment(AugmentSpec(rotate90=True, intensity=True, probability=0.3), 3)
    assert [type(t) for t in full.transforms] == [RandomFlip, RandomRot90, RandomIntensity]
    assert all(t.probability == 0.3 for t in full.transforms)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        build_augment(AugmentSpec(), 4)


def test_rot90_never_turns_a_thick_slice_axis_into_the_plane() -> None:
    """On 3.0 × 0.8 × 0.8 mm data only the (y, x) plane may rotate, even on a cubic patch."""
    from segcli.data.augment import RandomRot90

    label = np.zeros((8, 8, 8), np.int64)
    label[2] = 1  # a layer across z: it stays a z-layer under in-plane rotations only
    image = label[None].astype(np.float32)
    aniso = RandomRot90(probability=1.0, spacing=(3.0, 0.8, 0.8))
    iso = RandomRot90(probability=1.0, spacing=(1.0, 1.0, 1.1))
    moved_iso = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        _, out = aniso(image, label, rng)
        assert set(np.flatnonzero(out.any(axis=(1, 2)))) == {2}  # z never rotates
        _, out_iso = iso(image, label, np.random.default_rng(seed))
        moved_iso += set(np.flatnonzero(out_iso.any(axis=(1, 2)))) != {2}
    assert moved_iso > 0  # near-isotropic data does rotate z into the plane
