"""Overlay pictures: the slices cross the largest error; 2D and 3D render to PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from segcli.report.overlay import error_centre, render_case


def test_error_centre_is_in_the_largest_error_component() -> None:
    ref = np.zeros((20, 20, 20), bool)
    ref[5:15, 5:15, 5:15] = True
    pred = ref.copy()
    pred[0:2, 0:2, 0:2] = True  # 8 voxels of false positive
    pred[12:15, 5:15, 5:15] = False  # 300 voxels missed: the largest error
    wrong = pred ^ ref
    z, y, x = error_centre(pred, ref, wrong)
    assert wrong[z, y, x] and 12 <= z < 15


def test_error_centre_without_error_or_structure() -> None:
    empty = np.zeros((6, 8, 10), bool)
    assert error_centre(empty, empty, empty) == (3, 4, 5)
    blob = empty.copy()
    blob[1:3, 2:4, 3:5] = True
    centre = error_centre(blob, blob, empty)
    assert blob[centre]


def _png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data))


def test_render_3d_and_2d_with_and_without_image() -> None:
    ref = np.zeros((12, 30, 30), np.uint8)
    ref[3:9, 8:20, 8:20] = 1
    ref[4:6, 22:26, 22:26] = 2
    pred = np.roll(ref, 2, axis=2)
    three = _png(render_case(pred, ref, (2.0, 1.0, 1.0), ref * 10.0, labels=(1, 2), title="x"))
    two = _png(render_case(pred[5], ref[5], (1.0, 1.0), None, labels=(1, 2)))
    assert three.shape[1] > 2 * two.shape[1]  # three panels against one
    # the false-negative fill (blue) and false-positive fill (red) both appear
    rgb = three[: int(three.shape[0] * 0.85), :, :3]  # the panels, without the legend
    assert (rgb[..., 2] - rgb[..., 0] > 0.3).any()
    assert (rgb[..., 0] - rgb[..., 2] > 0.3).any()
    plain = _png(render_case(ref, ref, (2.0, 1.0, 1.0), ref * 10.0, labels=(1, 2)))
    plain = plain[: int(plain.shape[0] * 0.85), :, :3]
    assert not (plain[..., 2] - plain[..., 0] > 0.3).any()  # no error: no blue fill
    same = _png(render_case(ref, ref, (1.0, 1.0, 1.0), None, labels=(1, 2), centre=(5, 14, 14)))
    assert same.shape[0] > 0
