"""Overlay pictures for the report: reference and prediction contours, errors coloured.

For one case: false negatives (reference foreground the prediction left as background) in blue,
false positives (predicted foreground on reference background) in red, wrong-label voxels in
yellow; the reference outlined solid green and the prediction dashed orange.  3D: three
orthogonal slices through the centre of the largest connected error (no error: the centre of the
structure), cropped around the structures; 2D: the image.  Returned as PNG bytes, which the
report inlines as base64.

    >>> png = render_case(pred, ref, spacing, image, labels=(1, 2))
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli.errors import DataError

__all__ = [
    "CaseFiles",
    "draw_outline",
    "error_centre",
    "find_case_file",
    "load_case",
    "render_case",
]

_REF, _PRED = "#39e639", "#ff9f1c"
_FN, _FP, _SWAP = (0.2, 0.45, 1.0, 0.55), (1.0, 0.15, 0.15, 0.55), (1.0, 0.9, 0.1, 0.6)


def find_case_file(folder: Path, case: str) -> Path | None:
    """The image or label file of ``case`` in ``folder`` (``case.*`` or ``case_0000.*``)."""
    from segcli.io.images import IMAGE_SUFFIXES

    for stem in (case, f"{case}_0000"):
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


@dataclass
class CaseFiles:
    """One case's arrays for an overlay (``image`` None when not found), plus why not."""

    pred: np.ndarray | None
    ref: np.ndarray | None
    image: np.ndarray | None
    spacing: tuple[float, ...]
    gap: str


def load_case(
    case: str, pred_dir: Path | None, ref_dir: Path | None, images_dir: Path | None
) -> CaseFiles:
    """Read a case's label maps (and image); a missing or unreadable file becomes ``gap``."""
    from segcli.io.images import read_image, read_label

    if pred_dir is None or ref_dir is None:
        return CaseFiles(None, None, None, (), "label map folders unknown (no sidecar, no flags)")
    paths = {
        "prediction": find_case_file(pred_dir, case),
        "reference": find_case_file(ref_dir, case),
    }
    for what, where in (("prediction", pred_dir), ("reference", ref_dir)):
        if paths[what] is None:
            return CaseFiles(None, None, None, (), f"no {what} for this case in {where}")
    try:
        pred, _ = read_label(paths["prediction"])  # type: ignore[arg-type]
        ref, geometry = read_label(paths["reference"])  # type: ignore[arg-type]
    except DataError as exc:
        return CaseFiles(None, None, None, (), f"unreadable: {exc}")
    if pred.shape != ref.shape:
        return CaseFiles(
            None,
            None,
            None,
            (),
            f"prediction {pred.shape} and reference {ref.shape} differ in size",
        )
    image, gap = None, ""
    if images_dir is None:
        gap = "no image folder given: contours drawn on black"
    else:
        found = find_case_file(images_dir, case)
        if found is None:
            gap = f"image missing in {images_dir}: contours drawn on black"
        else:
            try:
                image = read_image(found)[0]
                image = image[0] if image.ndim == ref.ndim + 1 else image
                if image.shape != ref.shape:
                    image, gap = (
                        None,
                        f"image {found.name} is not on the label grid: contours drawn on black",
                    )
            except DataError as exc:
                gap = f"image unreadable ({exc}): contours drawn on black"
    return CaseFiles(pred, ref, image, tuple(geometry.spacing), gap)


def error_centre(pred_fg: np.ndarray, ref_fg: np.ndarray, wrong: np.ndarray) -> tuple[int, ...]:
    """Centre (rounded centre of mass) of the largest connected error region.

    ``wrong`` marks voxels whose label differs.  Without any error: the centre of the union of
    both masks; with both empty: the centre of the volume.
    """
    from scipy import ndimage

    if wrong.any():
        components, count = ndimage.label(wrong)
        sizes = np.bincount(components.ravel())[1:]
        target = components == (int(sizes.argmax()) + 1) if count > 1 else wrong
    elif (pred_fg | ref_fg).any():
        target = pred_fg | ref_fg
    else:
        return tuple(s // 2 for s in wrong.shape)
    centre = np.argwhere(target).mean(axis=0).round().astype(int)
    # a concave region's centre of mass may miss it: move to its nearest voxel
    points = np.argwhere(target)
    nearest = points[np.abs(points - centre).sum(axis=1).argmin()]
    return tuple(int(v) for v in nearest)


def _crop(fg: np.ndarray, margin_frac: float = 0.35, min_margin: int = 6) -> tuple[slice, ...]:
    """Per axis, the extent of ``fg`` widened by a margin (the whole axis when empty)."""
    if not fg.any():
        return tuple(slice(0, s) for s in fg.shape)
    out = []
    for axis, size in enumerate(fg.shape):
        other = tuple(a for a in range(fg.ndim) if a != axis)
        idx = np.flatnonzero(fg.any(axis=other))
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        pad = max(min_margin, int(round((hi - lo) * margin_frac)))
        out.append(slice(max(0, lo - pad), min(size, hi + pad)))
    return tuple(out)


def draw_outline(
    ax: object,
    mask: np.ndarray,
    colour: str,
    width: float,
    style: str,
    *,
    pixels: int = 240,
    max_factor: int = 6,
) -> None:
    """Draw the pixel-edge outline of a 2D mask on a matplotlib axes (nothing if it is empty).

    The mask is upsampled by an integer factor (``pixels // longest side``, between 1 and
    ``max_factor``) and contoured at 0.5, so the outline follows pixel edges and corners stay
    square; the coordinates are those of ``imshow`` (pixel centres at integers).  Shared by
    these report overlays and ``segcli evaluate --overlays`` (:mod:`segcli.engine.overlays`).

    Args:
        ax: a ``matplotlib.axes.Axes``.
        mask: boolean, shape (rows, cols).
        colour, width, style: the contour's colour, line width (points) and line style.
        pixels, max_factor: how finely the outline is traced (see above).
    """
    if not mask.any():
        return
    k = max(1, min(max_factor, pixels // max(mask.shape)))
    fine = np.pad(np.kron(mask.astype(np.float32), np.ones((k, k), np.float32)), 1)
    rows = (np.arange(-1, mask.shape[0] * k + 1) + 0.5) / k - 0.5
    cols = (np.arange(-1, mask.shape[1] * k + 1) + 0.5) / k - 0.5
    ax.contour(cols, rows, fine, levels=[0.5], colors=[colour], linewidths=width, linestyles=style)  # type: ignore[attr-defined]


def render_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    image: np.ndarray | None,
    labels: Sequence[int],
    title: str = "",
    panel_inches: float = 2.6,
    dpi: int = 80,
    centre: tuple[int, ...] | None = None,
) -> bytes:
    """PNG bytes of one case's overlay (see the module docstring).

    Args:
        pred, ref: integer label maps, same 2D or 3D shape (Z, Y, X).
        spacing: voxel size per axis in mm (same order), for the aspect ratio.
        image: intensities on the same grid, or None (black background).
        labels: the foreground labels drawn.
        title: figure title.
        panel_inches, dpi: size of each panel.
        centre: 3D only: (z, y, x) where the three slices cross; default the centre of the
            largest connected error (:func:`error_centre`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if ref.ndim not in (2, 3):
        raise DataError(f"overlays need 2D or 3D label maps, got {ref.ndim}D")
    ref_fg, pred_fg = np.isin(ref, labels), np.isin(pred, labels)
    masked_pred = np.where(pred_fg, pred, 0)
    masked_ref = np.where(ref_fg, ref, 0)
    fn = ref_fg & ~pred_fg
    fp = pred_fg & ~ref_fg
    swap = ref_fg & pred_fg & (masked_pred != masked_ref)
    box = _crop(ref_fg | pred_fg)
    if ref.ndim == 2:
        views = [("", lambda a: a[box], (spacing[0], spacing[1]))]
    else:
        z, y, x = centre or error_centre(pred_fg, ref_fg, fn | fp | swap)
        views = [
            (f"axial z={z}", lambda a: a[z][box[1], box[2]], (spacing[1], spacing[2])),
            (f"coronal y={y}", lambda a: a[:, y][box[0], box[2]], (spacing[0], spacing[2])),
            (f"sagittal x={x}", lambda a: a[:, :, x][box[0], box[1]], (spacing[0], spacing[1])),
        ]
    if image is not None:
        low, high = np.percentile(image, [0.5, 99.5])
    fig = Figure(figsize=(panel_inches * len(views), panel_inches + 0.7), dpi=dpi)
    FigureCanvasAgg(fig)
    for number, (name, pick, (sy, sx)) in enumerate(views, start=1):
        ax = fig.add_subplot(1, len(views), number)
        plane = pick(ref)
        if image is not None:
            ax.imshow(pick(image), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        else:
            ax.imshow(np.zeros(plane.shape), cmap="gray", vmin=0, vmax=1)
        colours = np.zeros((*plane.shape, 4))
        for mask, rgba in ((pick(fn), _FN), (pick(fp), _FP), (pick(swap), _SWAP)):
            colours[mask] = rgba
        ax.imshow(colours, interpolation="nearest")
        for label in labels:
            draw_outline(ax, pick(ref) == label, _REF, 1.8, "solid")
            draw_outline(ax, pick(pred) == label, _PRED, 1.1, "dashed")
        ax.set_xlim(-0.5, plane.shape[1] - 0.5)
        ax.set_ylim(plane.shape[0] - 0.5, -0.5)
        ax.set_aspect(sy / sx)
        ax.set_xticks([])
        ax.set_yticks([])
        if name:
            ax.set_title(name, fontsize=8)
    fig.legend(
        handles=[
            Line2D([], [], color=_REF, lw=1.8, label="reference"),
            Line2D([], [], color=_PRED, lw=1.1, ls="--", label="prediction"),
            Patch(color=_FN, label="missed (FN)"),
            Patch(color=_FP, label="extra (FP)"),
            Patch(color=_SWAP, label="wrong label"),
        ],
        loc="lower center",
        ncol=5,
        frameon=False,
        fontsize=7,
        handlelength=1.5,
        columnspacing=0.8,
    )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.14, wspace=0.04)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
