"""Overlay pictures for ``segcli evaluate --overlays``: don't trust metrics, look at your results.

One PNG per case: the image (if given) with the reference and prediction contours in two
colours, the case's Dice and HD95 in the title; for 3D cases three slices — the largest
reference area, the largest disagreement, the largest predicted area.

    >>> render_overlay(Path("case.png"), "case", pred, ref, spacing, results, image)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcli.atomic import atomic_open
from segcli.errors import DataError
from segcli.metrics import LabelResult
from segcli.report.overlay import draw_outline

__all__ = ["overlay_slices", "render_overlay"]

_REF_COLOUR, _PRED_COLOUR = "#39e639", "#ff3b3b"


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def overlay_slices(ref: np.ndarray, pred: np.ndarray, count: int = 3) -> list[tuple[int, str]]:
    """Slices (axis 0) to draw, with why: the largest reference area first, then where it goes wrong.

    Order of preference: the slice with the largest reference area, the one with the largest
    disagreement (prediction XOR reference), the one with the largest predicted area, then slices
    spread evenly over the extent of either mask (over the whole volume if both are empty).

    Args:
        ref: boolean foreground of the reference, shape (Z, *plane).
        pred: boolean foreground of the prediction, same shape.
        count: how many distinct slices (at most the number of slices).

    Returns:
        ``[(index, reason), ...]``, distinct indices, ``min(count, Z)`` of them.
    """
    axes = tuple(range(1, ref.ndim))
    ref_area, pred_area = ref.sum(axis=axes), pred.sum(axis=axes)
    chosen: dict[int, str] = {}
    for area, reason in (
        (ref_area, "largest reference area"),
        ((ref ^ pred).sum(axis=axes), "largest disagreement"),
        (pred_area, "largest predicted area"),
    ):
        if area.max() > 0 and int(area.argmax()) not in chosen:
            chosen[int(area.argmax())] = reason
    extent = np.flatnonzero((ref_area + pred_area) > 0)
    lo, hi = (int(extent[0]), int(extent[-1])) if extent.size else (0, ref.shape[0] - 1)
    spread = np.linspace(lo, hi, count + 2).round().astype(int).tolist()
    for index in spread + list(range(ref.shape[0])):
        if len(chosen) >= min(count, ref.shape[0]):
            break
        chosen.setdefault(index, "")
    return list(chosen.items())[:count]


def render_overlay(
    path: Path,
    case: str,
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...],
    results: Sequence[LabelResult],
    image: np.ndarray | None,
) -> None:
    """One PNG: image (if any) with reference and prediction contours; Dice and HD95 in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if ref.ndim not in (2, 3):
        raise DataError(f"case '{case}': overlays need 2D or 3D images, got {ref.ndim}D")
    labels = [r.label for r in results]
    ref_fg, pred_fg = np.isin(ref, labels), np.isin(pred, labels)
    if ref.ndim == 2:
        panels: list[tuple[str, slice | int]] = [("", slice(None))]
        aspect = spacing[0] / spacing[1]
    else:
        panels = [
            (f"slice {i}" + (f" ({why})" if why else ""), i)
            for i, why in overlay_slices(ref_fg, pred_fg)
        ]
        aspect = spacing[1] / spacing[2]
    if image is not None:
        low, high = np.percentile(image, [0.5, 99.5])
    fig = Figure(figsize=(4.2 * len(panels), 4.6), dpi=100)
    FigureCanvasAgg(fig)
    for number, (name, index) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), number)
        pick = (lambda a: a) if ref.ndim == 2 else (lambda a, i=index: a[i])
        plane_shape = pick(ref).shape
        if image is not None:
            ax.imshow(pick(image), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        else:
            ax.imshow(np.zeros(plane_shape), cmap="gray", vmin=0, vmax=1)
        draw_outline(ax, pick(ref_fg), _REF_COLOUR, 2.2, "solid", pixels=512, max_factor=8)
        draw_outline(ax, pick(pred_fg), _PRED_COLOUR, 1.2, "dashed", pixels=512, max_factor=8)
        ax.set_xlim(-0.5, plane_shape[1] - 0.5)
        ax.set_ylim(plane_shape[0] - 0.5, -0.5)
        ax.set_aspect(aspect)
        ax.set_xticks([])
        ax.set_yticks([])
        if name:
            ax.set_title(name, fontsize=9)
    fig.legend(
        handles=[
            Line2D([], [], color=_REF_COLOUR, lw=2.2, label="reference"),
            Line2D([], [], color=_PRED_COLOUR, lw=1.2, ls="--", label="prediction"),
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
    )
    scores = (
        "; ".join(
            f"label {r.label}: Dice {_fmt(r.values['dice'], 3)}, HD95 {_fmt(r.values['hd95'], 2)} mm"
            for r in results[:4]
        )
        or "no foreground label"
    )
    if len(results) > 4:
        scores += f"; ... ({len(results)} labels)"
    fig.suptitle(f"{case} — {scores}", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.09, wspace=0.05)
    with atomic_open(path, "wb", what="the overlay") as handle:
        fig.savefig(handle, format="png")
