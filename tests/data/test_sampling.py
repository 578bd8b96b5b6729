"""Patch sampler: shapes, crops inside the image, foreground centring, padding rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.data.sampling import foreground_locations, sample_patch
from segcli.padding import pad_to_shape


def _id_case(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Label = unique voxel ids 1..N (so any crop reveals its offset), image[0] = the same ids."""
    label = np.arange(1, int(np.prod(shape)) + 1, dtype=np.int64).reshape(shape)
    return label[None].astype(np.float32), label


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dims=st.sampled_from([2, 3]),
    force=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_patch_is_a_crop_of_the_padded_image(
    data: st.DataObject, dims: int, force: bool, seed: int
) -> None:
    shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=dims, max_size=dims)))
    patch = tuple(data.draw(st.lists(st.integers(1, 7), min_size=dims, max_size=dims)))
    image, label = _id_case(shape)
    rng = np.random.default_rng(seed)
    img_p, lab_p = sample_patch(image, label, patch, rng, force_foreground=force)
    assert img_p.shape == (1, *patch) and lab_p.shape == patch
    assert img_p.dtype == image.dtype and lab_p.dtype == label.dtype
    # the patch is exactly padded[box] for one box inside the padded image
    padded_img, _ = pad_to_shape(image, patch, mode="minimum")
    padded_lab, _ = pad_to_shape(label[None], patch, mode="constant", value=0)
    inside = lab_p > 0
    assert inside.any()  # a patch never lies entirely in padding
    first = tuple(int(i[0]) for i in np.nonzero(inside))
    where = tuple(int(i[0]) for i in np.nonzero(padded_lab[0] == lab_p[first]))
    start = tuple(w - f for w, f in zip(where, first, strict=True))
    assert all(0 <= s <= p - q for s, p, q in zip(start, padded_lab.shape[1:], patch, strict=True))
    box = tuple(slice(s, s + q) for s, q in zip(start, patch, strict=True))
    np.testing.assert_array_equal(lab_p, padded_lab[0][box])
    np.testing.assert_array_equal(img_p, padded_img[(slice(None), *box)])


@pytest.mark.parametrize("mode,value", [("minimum", 0.0), ("constant", -7.0), ("edge", 0.0)])
def test_small_image_is_padded_like_inference(mode: str, value: float) -> None:
    rng = np.random.default_rng(3)
    image = rng.uniform(3.0, 10.0, size=(2, 5, 4)).astype(np.float32)  # 2 channels
    image[1] += 20.0  # a different minimum per channel
    label = (rng.random((5, 4)) > 0.5).astype(np.uint8)
    img_p, lab_p = sample_patch(
        image, label, (8, 8), rng, force_foreground=True, pad_mode=mode, pad_value=value
    )
    expected, crop = pad_to_shape(image, (8, 8), mode=mode, value=value)
    np.testing.assert_array_equal(img_p, expected)
    np.testing.assert_array_equal(lab_p[crop[1:]], label)
    assert (lab_p.sum()) == label.sum()  # the label is padded with 0
    if mode == "minimum":  # per-channel minimum, never zero
        assert img_p[0, 0, 0] == image[0].min() and img_p[1, 0, 0] == image[1].min()


@pytest.mark.parametrize("dims", [2, 3])
def test_forced_patch_centres_on_the_foreground_voxel(dims: int) -> None:
    size, patch = 40, 12
    shape = (size,) * dims
    image = np.zeros((1, *shape), np.float32)
    label = np.zeros(shape, np.uint8)
    voxel = (20,) * dims
    label[voxel] = 1
    rng = np.random.default_rng(0)
    fg = foreground_locations(label)
    positions = []
    for _ in range(200):
        _, lab_p = sample_patch(image, label, (patch,) * dims, rng, True, foreground=fg)
        where = np.argwhere(lab_p == 1)
        assert len(where) == 1  # always contains the voxel
        positions.append(where[0])
    positions = np.array(positions)
    # centred with a jitter of ±patch//4 = ±3 around patch//2 = 6
    assert positions.min() >= 3 and positions.max() <= 9
    assert len(np.unique(positions[:, 0])) > 3  # jitter really varies


def test_forced_patch_on_an_image_padded_in_one_axis() -> None:
    # 4 × 60 image, patch 8 × 8: axis 0 padded by 2 on each side, axis 1 cropped
    image = np.zeros((1, 4, 60), np.float32)
    label = np.zeros((4, 60), np.uint8)
    label[3, 50] = 2
    rng = np.random.default_rng(1)
    fg = foreground_locations(label)  # unpadded coordinates: the sampler shifts them
    for _ in range(50):
        _, lab_p = sample_patch(image, label, (8, 8), rng, True, foreground=fg)
        assert (lab_p == 2).sum() == 1


def test_classes_are_chosen_uniformly_not_by_voxel_count() -> None:
    # class 1 fills a 30×30 block, class 2 is one voxel far away: by voxels, class 2 would be
    # drawn 1 time in 901; by class it is drawn half the time.
    image = np.zeros((1, 100, 100), np.float32)
    label = np.zeros((100, 100), np.uint8)
    label[:30, :30] = 1
    label[90, 90] = 2
    rng = np.random.default_rng(2)
    fg = foreground_locations(label)
    hits = sum(
        int((sample_patch(image, label, (8, 8), rng, True, foreground=fg)[1] == 2).any())
        for _ in range(400)
    )
    assert 0.4 < hits / 400 < 0.6


def test_unforced_patches_are_uniform_over_positions() -> None:
    image, label = _id_case((10,))
    image, label = image.reshape(1, 10, 1), label.reshape(10, 1)
    rng = np.random.default_rng(4)
    starts = [int(sample_patch(image, label, (4, 1), rng, False)[1][0, 0]) - 1 for _ in range(3500)]
    counts = np.bincount(starts, minlength=7)
    assert len(counts) == 7  # starts 0..6 only (10 − 4 + 1 positions)
    assert counts.min() > 400 and counts.max() < 600  # 500 expected each


def test_no_foreground_falls_back_to_a_random_patch() -> None:
    image = np.zeros((1, 20, 20), np.float32)
    label = np.zeros((20, 20), np.uint8)
    rng = np.random.default_rng(0)
    img_p, lab_p = sample_patch(image, label, (8, 8), rng, True, foreground={})
    assert img_p.shape == (1, 8, 8) and not lab_p.any()


def test_foreground_locations() -> None:
    label = np.zeros((4, 5), np.uint8)
    label[1, 2] = 1
    label[3, 4] = 1
    label[0, 0] = 3
    fg = foreground_locations(label)
    assert sorted(fg) == [1, 3]
    assert fg[1].tolist() == [[1, 2], [3, 4]]
    assert fg[3].tolist() == [[0, 0]]
    assert foreground_locations(np.zeros((3, 3), np.uint8)) == {}
    big = np.ones((50, 50), np.uint8)
    sub = foreground_locations(big, max_per_class=100, seed=5)[1]
    assert sub.shape == (100, 2) and len({tuple(x) for x in sub.tolist()}) == 100
    assert (label_at := big[tuple(sub.T)]).all() and label_at.size == 100
    np.testing.assert_array_equal(sub, foreground_locations(big, max_per_class=100, seed=5)[1])


def test_dimension_errors_name_the_shapes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="patch_size"):
        sample_patch(np.zeros((1, 4, 4)), np.zeros((4, 4), np.uint8), (4, 4, 4), rng, False)
    with pytest.raises(ValueError, match="label shape"):
        sample_patch(np.zeros((1, 4, 4)), np.zeros((4, 5), np.uint8), (4, 4), rng, False)
