"""The architecture registry and the interface every segmentation network implements.

    >>> from segcli.models.base import ARCHITECTURES
    >>> ARCHITECTURES.names()
    ['cnn', 'dilated', 'fcn', 'patch_cnn', 'unet']

Builders are registered with ``@ARCHITECTURES.register("name")`` in their own module and take
the typed model spec.  Networks subclass :class:`SegmentationNetwork` and describe their
forward pass as a :class:`~segcli.models.graph.Graph` for sizes and receptive fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from segcli.models.graph import Graph
from segcli.registry import Registry

__all__ = ["ARCHITECTURES", "SegmentationNetwork"]

#: name (the spec's ``model.arch``) → builder ``(spec) -> SegmentationNetwork``
ARCHITECTURES: Registry[Callable[[Any], SegmentationNetwork]] = Registry("architecture")


class SegmentationNetwork(nn.Module):
    """A module mapping ``(B, in_channels, *spatial)`` to ``(B, classes, *out)`` logits.

    Subclasses set ``dims``, ``in_channels`` and ``num_classes`` and implement
    :meth:`field_graph`, a mirror of ``forward`` that the receptive-field analysis and
    :func:`segcli.models.output_size` walk.  Tests check that the graph's sizes equal the real
    output shapes, so the mirror cannot drift silently.
    """

    dims: int
    in_channels: int
    num_classes: int

    def field_graph(self) -> Graph:  # pragma: no cover - abstract
        raise NotImplementedError
