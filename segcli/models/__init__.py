"""Segmentation architectures, built from the ``model`` section of the spec (2D or 3D).

    >>> import torch
    >>> from segcli.config.schema import UNetSpec
    >>> from segcli.models import build, output_size
    >>> net = build(UNetSpec(filters=8, depth=3))          # (B, 1, 32, 32) -> (B, 2, 32, 32)
    >>> output_size(UNetSpec(padding="valid", filters=64, depth=4), [572, 572])
    (388, 388)

Every network maps ``(B, in_channels, *patch)`` to ``(B, classes, *out)`` logits — no softmax
or sigmoid inside.  ``out == patch`` with ``same`` padding; valid-padding networks shrink
(:func:`output_size` says by how much and which input sizes work).  ``unet`` with
``deep_supervision`` returns a list ``[full-res, half-res, ...]`` in training mode only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segcli.errors import SpecError

# Architecture modules register themselves on import (explicit, no scanning).
from segcli.models import cnn as _cnn  # noqa: F401
from segcli.models import fcn as _fcn  # noqa: F401
from segcli.models import patch_cnn as _patch_cnn  # noqa: F401
from segcli.models import unet as _unet  # noqa: F401
from segcli.models.base import ARCHITECTURES, SegmentationNetwork
from segcli.models.graph import Graph, SizeError

__all__ = [
    "ARCHITECTURES",
    "SegmentationNetwork",
    "build",
    "check_input_size",
    "count_parameters",
    "field_graph",
    "output_size",
    "size_multiple",
]


def build(spec: Any) -> SegmentationNetwork:
    """Build the network described by a model spec (``CNNSpec``, ``UNetSpec``, ...).

    Args:
        spec: one of the pydantic model specs of :mod:`segcli.config.schema`; dispatched on
            ``spec.arch`` through :data:`ARCHITECTURES`.

    Returns:
        A freshly initialised :class:`SegmentationNetwork` (on the current default device).

    Raises:
        SpecError: unknown ``arch`` (with the choices and a "did you mean").
    """
    return ARCHITECTURES.get(spec.arch)(spec)


def field_graph(spec: Any) -> Graph:
    """The layer graph of ``spec``'s network, built on the meta device (no memory, instant)."""
    with torch.device("meta"):
        model = build(spec)
    return model.field_graph()


def _nearby(graph: Graph, size: int, axis: int) -> tuple[int | None, int | None]:
    """Closest lengths below and above ``size`` that pass through ``graph`` along ``axis``."""
    span = max(256, 8 * graph.total_stride()[axis])
    below = next((n for n in range(size - 1, 0, -1) if graph.fits(n, axis)), None)
    above = next((n for n in range(size + 1, size + span) if graph.fits(n, axis)), None)
    return below, above


def _stride_text(strides: Sequence[int]) -> str:
    """``64`` for an isotropic total stride, ``4×8×8`` for a per-axis one."""
    return str(strides[0]) if len(set(strides)) == 1 else "×".join(map(str, strides))


def output_size(
    spec: Any, input_size: Sequence[int], *, key: str = "input size"
) -> tuple[int, ...]:
    """Spatial output size of ``spec``'s network for ``input_size`` (array axis order).

    Args:
        spec: a model spec.
        input_size: one size per spatial axis (``spec.dims`` entries).
        key: how to name ``input_size`` in errors (e.g. ``"data.patch_size"``).

    Returns:
        The spatial size of the logits, e.g. ``(388, 388)`` for the 2015 U-Net on 572×572.

    Raises:
        SpecError: wrong number of entries, or a size the network cannot process (it shrinks
            to nothing, or a pooling/skip connection would misalign); the message names the
            layer and the nearest sizes that work, like SMP's ``check_input_shape``.
    """
    size = [int(s) for s in input_size]
    if len(size) != spec.dims:
        raise SpecError(f"{key} {size} has {len(size)} entries but model.dims is {spec.dims}")
    graph = field_graph(spec)
    try:
        return graph.sizes(size)[graph.output.index]
    except SizeError as exc:
        below, above = _nearby(graph, size[exc.axis], exc.axis)
        works = [str(n) for n in (below, above) if n is not None]
        if below is None and above is not None:
            hint = (
                f"the input is too small for this network; the smallest size that works is {above}"
            )
        elif works:
            hint = f"nearby sizes that work: {' or '.join(works)}"
        else:
            hint = "no size nearby works"
        strides = graph.total_stride()
        multiple = f" (the total stride is {_stride_text(strides)})" if max(strides) > 1 else ""
        raise SpecError(
            f"{key} {size} does not fit model.arch '{spec.arch}'{multiple}: axis {exc.axis} "
            f"(size {size[exc.axis]}): {exc}; {hint}"
        ) from None


def check_input_size(
    spec: Any, input_size: Sequence[int], *, key: str = "data.patch_size"
) -> tuple[int, ...]:
    """:func:`output_size` with errors naming ``key`` — call it to validate a patch size."""
    return output_size(spec, input_size, key=key)


def size_multiple(spec: Any) -> tuple[int, ...]:
    """Total stride per axis: patch sizes should be multiples of it (``2**depth`` for U-Net,
    the product of ``model.strides`` along each axis for an anisotropic U-Net).

    Same-padding U-Nets and FCNs *require* it; valid-padding networks need more (see
    :func:`output_size`); 1 for networks without pooling.
    """
    return field_graph(spec).total_stride()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
