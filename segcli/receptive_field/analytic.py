"""Analytic receptive field: walk the layer graph, tracking jump and field per axis.

    >>> from segcli.config.schema import DilatedSpec
    >>> from segcli.models import field_graph
    >>> from segcli.receptive_field.analytic import analyse
    >>> analyse(field_graph(DilatedSpec(dilations=[1, 2, 4])), (32, 32)).receptive_field
    (15, 15)

Definitions (SPEC.md, "Receptive field"): the jump of a layer is the distance in input pixels
between neighbouring output units (product of strides; upsampling divides it); its receptive
field grows as ``r_out = r_in + (k_eff − 1)·jump_in`` with ``k_eff = d·(k − 1) + 1``, pooling
like convolution.  Instead of the closed formula this module composes the exact per-axis index
maps of :mod:`segcli.models.graph` — output index → interval of input indices — which
gives the same numbers for chains of convolutions and poolings and stays exact where the
formula needs care: after upsampling the field depends on where a unit sits relative to the
coarser grids, and with skip connections on the path taken.  The field reported is the hull
over all paths, the largest over output positions across one period of the stride grids.
Indices are unbounded (no clipping at the image border): the field of a unit away from borders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the graph is each network's description of itself (segcli.models)
    from segcli.models.graph import Graph, Node


__all__ = ["FieldReport", "LayerField", "analyse", "node_field"]


@dataclass(frozen=True)
class LayerField:
    """One row of the per-layer table.

    Attributes:
        name, type: layer name (e.g. ``down1.conv2``) and kind (``conv``, ``max pool`` ...).
        channels: output feature maps.
        output_size: spatial output size for the analysed input size (array axis order).
        kernel: kernel edge (1 for pointwise layers, 0 where not applicable), or one edge
            per axis for an anisotropic layer (e.g. ``(1, 3, 3)``).
        jump: input pixels between neighbouring outputs, per axis (a fraction after
            upsampling beyond the input resolution).
        receptive_field: input pixels (extent) one output unit depends on, per axis.
        parameters: parameters of this layer, with the normalisation and activation that
            follow it.
    """

    name: str
    type: str
    channels: int
    output_size: tuple[int, ...]
    kernel: int | tuple[int, ...]
    jump: tuple[Fraction, ...]
    receptive_field: tuple[int, ...]
    parameters: int

    @property
    def maps_and_neurons(self) -> str:
        """The lecture's wording: ``48 maps of 92x92 neurons`` or ``200 neurons``."""
        if all(s == 1 for s in self.output_size) and self.type.startswith("fully connected"):
            return f"{self.channels} neurons"
        maps = "map" if self.channels == 1 else "maps"
        return f"{self.channels} {maps} of {'x'.join(map(str, self.output_size))} neurons"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "channels": self.channels,
            "output_size": list(self.output_size),
            "kernel": list(self.kernel) if isinstance(self.kernel, tuple) else self.kernel,
            "jump": [_number(j) for j in self.jump],
            "receptive_field": list(self.receptive_field),
            "parameters": self.parameters,
            "maps_and_neurons": self.maps_and_neurons,
        }


@dataclass(frozen=True)
class FieldReport:
    """Result of :func:`analyse`: per-layer rows and the totals at the network output."""

    input_size: tuple[int, ...]
    output_size: tuple[int, ...]
    receptive_field: tuple[int, ...]
    jump: tuple[Fraction, ...]
    parameters: int
    layers: tuple[LayerField, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "receptive_field": list(self.receptive_field),
            "parameters": self.parameters,
            "layers": [row.to_dict() for row in self.layers],
            "input_size": list(self.input_size),
            "output_size": list(self.output_size),
            "jump": [_number(j) for j in self.jump],
        }


def _number(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


def node_field(
    graph: Graph, node: Node, sizes: Sequence[Sequence[int]], axis: int
) -> tuple[int, int]:
    """``(field, offset)``: largest extent over one period of ``node``'s positions along ``axis``.

    ``offset`` is where that largest field starts relative to ``position × jump`` for the
    position attaining it (informative only).
    """
    best, best_offset = 0, 0
    for position in range(graph.period(node, axis)):
        lo, hi = graph.field(node, position, position, sizes, axis)
        if hi - lo + 1 > best:
            best, best_offset = hi - lo + 1, lo - int(position * node.scales[axis])
    return best, best_offset


def analyse(graph: Graph, input_size: Sequence[int]) -> FieldReport:
    """Per-layer sizes, jumps, receptive fields and parameters for ``input_size``.

    Args:
        graph: the network's layer graph (``model.field_graph()``).
        input_size: spatial input size, one entry per axis (array axis order).

    Returns:
        A :class:`FieldReport`; ``parameters`` sums every node (rows and hidden ones), which
        equals the model's parameter count.

    Raises:
        SizeError: the network cannot process ``input_size``
            (:func:`segcli.models.output_size` turns that into a SpecError with advice).
    """
    sizes = graph.sizes(input_size)
    dims = len(sizes[0])
    rows = []
    fields: dict[int, tuple[int, ...]] = {}
    for node in graph.nodes:
        if not (node.row or node is graph.output):
            continue
        field = tuple(node_field(graph, node, sizes, axis)[0] for axis in range(dims))
        fields[node.index] = field
        rows.append(
            LayerField(
                name=node.name,
                type=node.type,
                channels=node.channels,
                output_size=tuple(sizes[node.index]),
                kernel=0 if node.op in ("input", "merge", "crop") else node.kernel,
                jump=tuple(node.scales),
                receptive_field=field,
                parameters=node.params,
            )
        )
    out = graph.output
    return FieldReport(
        input_size=tuple(int(s) for s in input_size),
        output_size=tuple(sizes[out.index]),
        receptive_field=fields[out.index],
        jump=tuple(out.scales),
        parameters=sum(n.params for n in graph.nodes),
        layers=tuple(rows),
    )
