from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segcli.data.synth import generate, make_case, write_dataset
from segcli.io.dataset import find_cases
from segcli.io.images import read_image, read_label


def ring_of(image: np.ndarray, label: np.ndarray, lesion: int, d: int) -> np.ndarray:
    """The outline at Chebyshev distance d from the lesion box (derived independently)."""
    bright = image > 0.5
    components, n = ndimage.label(bright)
    # the lesion is the component that is a solid m^n box
    for k in range(1, n + 1):
        comp = components == k
        if comp.sum() == lesion**image.ndim:
            box = comp
            break
    else:  # pragma: no cover
        raise AssertionError("no lesion found")
    dist = ndimage.distance_transform_cdt(~box, metric="chessboard")
    return dist == d


@pytest.mark.parametrize("dims", [2, 3])
def test_labelled_voxels_belong_to_ringed_lesions_only(dims: int) -> None:
    lesion, d = 3, 5
    for case in generate(
        40,
        dims=dims,
        size=24 if dims == 3 else 32,
        lesion=lesion,
        ring_distance=d,
        seed=3,
        noise=0.05,
    ):
        image, label = case.image, case.label
        bright = image > 0.5
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        ring = ring_of(image, label, lesion, d)
        if case.malign:
            assert label.sum() == lesion**dims
            assert bright[ring].all(), "malign lesions are fully ringed"
            assert (bright == (label.astype(bool) | ring)).all(), "nothing else is bright"
            assert (image[label == 1] == 1.0).all()
        else:
            assert label.sum() == 0
            assert bright.sum() == lesion**dims, "benign: only the lesion is bright"


def test_deterministic_in_seed_and_roughly_balanced() -> None:
    a, b = generate(200, seed=7), generate(200, seed=7)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, generate(1, seed=8)[0].image)
    share = np.mean([c.malign for c in a])
    assert 0.4 < share < 0.6


def test_the_lecture_class_imbalance() -> None:
    image, label, _ = make_case(np.random.default_rng(0), malign=True)
    assert image.shape == (32, 32) and label.sum() == 9  # 9 of 1024 pixels


def test_ring_must_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        make_case(np.random.default_rng(0), size=10, lesion=3, ring_distance=5)


def test_written_dataset_is_valid(tmp_path: Path) -> None:
    cases = generate(10, dims=3, size=16, lesion=2, ring_distance=3, seed=1)
    write_dataset(tmp_path, cases)
    found = find_cases(tmp_path)
    assert [c.name for c in found] == [c.name for c in cases]
    image, geometry = read_image(found[3].images[0])
    label, _ = read_label(found[3].label)
    np.testing.assert_array_equal(image, cases[3].image)
    np.testing.assert_array_equal(label, cases[3].label)
    assert geometry.size == (16, 16, 16)
