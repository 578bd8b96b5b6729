"""Postprocessing steps (segcli/postprocess.py) on crafted components, a slow reference, and
their use by predict (``inference.postprocess``)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from segcli.engine.predict import predict_cases
from segcli.io.images import make_geometry, read_label, write_image
from segcli.postprocess import (
    fill_holes,
    keep_largest_component,
    postprocess_labels,
    remove_small_components,
)


def components_by_flood_fill(mask: np.ndarray) -> list[set[tuple[int, ...]]]:
    """Face-connected components by breadth-first search: slow and obviously correct."""
    seen: set[tuple[int, ...]] = set()
    found = []
    for start in map(tuple, np.argwhere(mask)):
        if start in seen:
            continue
        component, queue = {start}, deque([start])
        seen.add(start)
        while queue:
            voxel = queue.popleft()
            for axis in range(mask.ndim):
                for step in (-1, 1):
                    n = list(voxel)
                    n[axis] += step
                    n = tuple(n)
                    if 0 <= n[axis] < mask.shape[axis] and mask[n] and n not in seen:
                        seen.add(n)
                        component.add(n)
                        queue.append(n)
        found.append(component)
    return found


def as_mask(voxels: set[tuple[int, ...]], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for voxel in voxels:
        out[voxel] = True
    return out


# --------------------------------------------------------------------------- crafted


def test_diagonal_neighbours_are_separate_components() -> None:
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # touch at a corner only: two components
    mask[3:6, 3:5] = True  # 6 voxels
    assert keep_largest_component(mask).sum() == 6
    assert remove_small_components(mask, 2).sum() == 6
    assert remove_small_components(mask, 1).sum() == 8  # nothing is smaller than 1
    cube = np.zeros((3, 3, 3), bool)
    cube[0, 0, 0] = cube[1, 1, 0] = cube[1, 1, 1] = True  # edge-diagonal, then a face
    assert keep_largest_component(cube).sum() == 2


def test_min_size_keeps_components_of_exactly_that_size() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0, :4] = True  # 4
    mask[5, :5] = True  # 5
    mask[9, 9] = True  # 1
    kept = remove_small_components(mask, 5)
    assert kept.sum() == 5 and kept[5, :5].all()
    with pytest.raises(ValueError, match="min_size"):
        remove_small_components(mask, -1)


def test_fill_holes_fills_enclosed_cavities_but_not_open_ones() -> None:
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False  # a closed 27-voxel cavity
    assert fill_holes(shell).sum() == 125
    cup = shell.copy()
    cup[3, 3, 5] = False  # a channel to the outside: not a hole any more
    assert fill_holes(cup).sum() == cup.sum()
    ring = np.zeros((5, 5), bool)
    ring[0, :] = ring[:, 0] = ring[4, :] = ring[:, 4] = True  # at the border, still closed
    assert fill_holes(ring).all()


def test_labels_never_overwrite_each_other() -> None:
    labels = np.zeros((9, 9), np.uint8)
    labels[1:8, 1:8] = 1
    labels[3:6, 3:6] = 2  # label 2 inside label 1, with a hole of its own at the centre
    labels[4, 4] = 0
    labels[2, 2] = 0  # a hole of label 1 only
    labels[0, 8] = 3  # a tiny separate label
    out = postprocess_labels(labels, fill_holes=True, min_size=2)
    assert out[4, 4] == 2  # the pocket enclosed by both goes to the inner label
    assert out[2, 2] == 1
    assert out[0, 8] == 0  # removed by min_size
    assert (out[3:6, 3:6] == 2).all() and out.dtype == np.uint8
    untouched = postprocess_labels(labels)
    assert untouched is labels  # no step enabled: nothing copied


def test_largest_component_per_label_and_only() -> None:
    labels = np.zeros((8, 12), np.int16)
    labels[0:3, 0:3] = 1  # 9
    labels[6:8, 10:12] = 1  # 4, removed
    labels[5, 0:2] = 2  # 2, removed
    labels[0:4, 6:9] = 2  # 12
    out = postprocess_labels(labels, largest_component=True)
    assert (out == 1).sum() == 9 and (out == 2).sum() == 12 and out.dtype == np.int16
    only = postprocess_labels(labels, largest_component=True, only=[2])
    assert (only == 1).sum() == 13 and (only == 2).sum() == 12


# --------------------------------------------------------------------------- reference


@settings(max_examples=60, deadline=None)
@given(
    mask=arrays(
        bool,
        st.sampled_from([(9, 9), (5, 6, 7), (12,)]),
        elements=st.booleans(),
    ),
    min_size=st.integers(0, 6),
)
def test_component_steps_agree_with_a_flood_fill_reference(mask, min_size) -> None:
    components = components_by_flood_fill(mask)
    largest = max(components, key=len, default=set())
    got = keep_largest_component(mask)
    assert got.sum() == len(largest)
    assert any(np.array_equal(got, as_mask(c, mask.shape)) for c in components) or not mask.any()
    kept = [c for c in components if len(c) >= min_size]
    expected = as_mask(set().union(*kept), mask.shape) if kept else np.zeros_like(mask)
    np.testing.assert_array_equal(remove_small_components(mask, min_size), expected)
    # holes: background components that touch no border
    background = components_by_flood_fill(~mask)
    inner = [
        c
        for c in background
        if all(0 < v[a] < mask.shape[a] - 1 for v in c for a in range(mask.ndim))
    ]
    filled = mask | (as_mask(set().union(*inner), mask.shape) if inner else False)
    np.testing.assert_array_equal(fill_holes(mask), filled)


# --------------------------------------------------------------------------- predict


def _threshold_checkpoint(exp, path: Path) -> Path:
    """A 1×1 CNN whose argmax is 1 where the image is > 0.05, 2 where < -0.05, else 0."""
    import torch

    from segcli.io.checkpoint import save_checkpoint

    weights = {
        "blocks.0.0.weight": torch.tensor([1.0, -1.0]).view(2, 1, 1, 1),
        "blocks.0.0.bias": torch.zeros(2),
        "head.weight": torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]).view(3, 2, 1, 1),
        "head.bias": torch.tensor([0.5, 0.0, 0.0]),
    }
    save_checkpoint(path, {"model": weights, "spec": exp.model_dump(mode="json"), "epoch": 0})
    return path


def test_predict_applies_the_postprocessing_after_argmax(tmp_path: Path, make_experiment) -> None:
    model = {"arch": "cnn", "dims": 2, "filters": 2, "classes": 3, "layers": 1, "kernel_size": 1}
    steps = {"largest_component": True, "min_size": 3, "fill_holes": True}
    data = {"patch_size": [16, 16], "normalization": "none"}
    plain = make_experiment(tmp_path, dims=2, model=model, data=data)
    post = make_experiment(
        tmp_path, dims=2, model=model, data=data, inference={"postprocess": steps}
    )
    ckpt = _threshold_checkpoint(plain, tmp_path / "c.pt")
    noise = ndimage.gaussian_filter(np.random.default_rng(5).normal(size=(40, 36)), 1.5)
    write_image(
        tmp_path / "in" / "a_0000.nii.gz",
        noise.astype(np.float32),
        make_geometry(noise.shape, (0.7, 0.9)),
    )
    predict_cases(plain, tmp_path / "in", tmp_path / "raw", [ckpt], device="cpu")
    raw, _ = read_label(tmp_path / "raw" / "a.nii.gz")
    np.testing.assert_array_equal(raw, np.select([noise > 0.05, noise < -0.05], [1, 2], 0))
    assert min(ndimage.label(raw == k)[1] for k in (1, 2)) >= 2  # fragmented
    predict_cases(post, tmp_path / "in", tmp_path / "post", [ckpt], device="cpu")
    cleaned, _ = read_label(tmp_path / "post" / "a.nii.gz")
    np.testing.assert_array_equal(cleaned, postprocess_labels(raw, **steps))
    assert [ndimage.label(cleaned == k)[1] for k in (1, 2)] == [1, 1]
