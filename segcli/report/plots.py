"""Inline SVG plots for the report: box plots with every case as a point, and A-vs-B scatters.

Text stays text (``svg.fonttype = none``) so the page's font applies and the file stays small.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["box_plot", "scatter_plot"]

#: Above this many points per group, the points are drawn as one embedded bitmap inside the
#: SVG (axes and text stay vector): thousands of SVG circles make a page slow to open.
_VECTOR_POINTS = 300


def _svg(fig: object) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "segcli"}):
        fig.savefig(buffer, format="svg", dpi=110)  # type: ignore[attr-defined]
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prolog and doctype: inline in HTML
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _figure(width: float, height: float) -> object:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=72)
    FigureCanvasAgg(fig)
    return fig


def box_plot(groups: Sequence[tuple[str, Sequence[float]]], metric: str, unit: str = "") -> str:
    """An SVG box plot, one box per group (label), every finite value drawn as a jittered point.

    Args:
        groups: ``[(name, values), ...]``; NaN values are left out (the summary counts them).
        metric: axis title.
        unit: appended to the axis title.
    """
    fig = _figure(1.3 + 1.2 * len(groups), 2.6)
    ax = fig.add_subplot(1, 1, 1)  # type: ignore[attr-defined]
    data = [np.asarray([v for v in values if not math.isnan(v)], float) for _, values in groups]
    rng = np.random.default_rng(0)
    positions = list(range(1, len(groups) + 1))
    shown = [d if d.size else np.array([np.nan]) for d in data]
    ax.boxplot(
        shown, positions=positions, widths=0.55, showfliers=False, medianprops={"color": "#c0392b"}
    )
    for pos, values in zip(positions, data, strict=True):
        if values.size:
            x = pos + rng.uniform(-0.18, 0.18, values.size)
            ax.scatter(
                x,
                values,
                s=6,
                alpha=0.55,
                color="#2c6fbb",
                linewidths=0,
                rasterized=values.size > _VECTOR_POINTS,
            )
    ax.set_xticks(positions, [name for name, _ in groups], fontsize=8)
    ax.set_ylabel(metric + (f" [{unit}]" if unit else ""), fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()  # type: ignore[attr-defined]
    return _svg(fig)


def scatter_plot(
    a: Sequence[float], b: Sequence[float], name_a: str, name_b: str, title: str
) -> str:
    """An SVG scatter of B against A per case with the identity line (pairs with a NaN dropped)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    fig = _figure(2.9, 2.9)
    ax = fig.add_subplot(1, 1, 1)  # type: ignore[attr-defined]
    if x.size:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        pad = (hi - lo) * 0.05 or 0.05
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#888", lw=0.8, ls="--")
        ax.scatter(
            x, y, s=9, alpha=0.6, color="#2c6fbb", linewidths=0, rasterized=x.size > _VECTOR_POINTS
        )
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(name_a, fontsize=8)
    ax.set_ylabel(name_b, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()  # type: ignore[attr-defined]
    return _svg(fig)
