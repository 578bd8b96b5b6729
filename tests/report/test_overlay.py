"""Overlay pictures: the slices cross the largest error; 2D and 3D render to PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from segcli.report.overlay import draw_outline, error_centre, render_case


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


def test_centre_picks_the_slices_that_are_drawn() -> None:
    # one missed region, z 3..5 only: the axial panel (the left third) shows it at z=4 and
    # not at z=7; the default centre is in it
    ref = np.zeros((12, 30, 30), np.uint8)
    ref[3:9, 8:20, 8:20] = 1
    pred = ref.copy()
    pred[3:6, 8:20, 8:14] = 0

    def axial_blue(centre: tuple[int, int, int] | None) -> bool:
        png = _png(render_case(pred, ref, (1.0, 1.0, 1.0), None, labels=(1,), centre=centre))
        axial = png[: int(png.shape[0] * 0.85), : png.shape[1] // 3, :3]
        return bool((axial[..., 2] - axial[..., 0] > 0.3).any())

    assert axial_blue((4, 14, 11)) and axial_blue(None)
    assert not axial_blue((7, 14, 11))


def test_outline_follows_pixel_edges_at_any_upsampling() -> None:
    """The one outline helper (report and evaluate --overlays): a mask's contour runs along
    the pixel edges, i.e. on the box [lo - 0.5, hi + 0.5] around the pixels, for the report's
    and the evaluate overlays' upsampling alike; an empty mask draws nothing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mask = np.zeros((12, 9), bool)
    mask[3:7, 2:8] = True  # rows 3..6, cols 2..7
    for pixels, max_factor in ((240, 6), (512, 8), (1, 1)):
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        draw_outline(ax, np.zeros_like(mask), "r", 1.0, "solid")
        assert not ax.collections
        draw_outline(ax, mask, "r", 1.0, "solid", pixels=pixels, max_factor=max_factor)
        (contour,) = ax.collections
        vertices = np.concatenate([p.vertices for p in contour.get_paths()])
        cols, rows = vertices[:, 0], vertices[:, 1]
        np.testing.assert_allclose([cols.min(), cols.max()], [1.5, 7.5], atol=1e-6)
        np.testing.assert_allclose([rows.min(), rows.max()], [2.5, 6.5], atol=1e-6)
        on_edge = np.isclose(cols, 1.5) | np.isclose(cols, 7.5)
        on_edge |= np.isclose(rows, 2.5) | np.isclose(rows, 6.5)
        assert on_edge.all()  # square corners: every vertex on the box
