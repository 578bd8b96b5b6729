"""A torch-free description of a network's spatial index maps, for sizes and receptive fields.

Every architecture in :mod:`segcli.models` describes its forward pass as a small DAG of
nodes (convolutions, poolings, up-samplings, crops, merges).  Each node knows, per spatial
axis, (a) the output size for an input size and (b) which input indices an output index
reads — an interval, since every operation is separable and local.  From that
:mod:`segcli.receptive_field.analytic` derives sizes, jumps and receptive fields exactly.

    >>> from segcli.receptive_field.graph import Graph
    >>> g = Graph(dims=2, in_channels=1)
    >>> x = g.conv(g.input, "conv1", channels=8, kernel=3, pad=(1, 1), params=80)
    >>> g.set_output(g.conv(x, "head", channels=2, kernel=1, params=18))
    >>> g.sizes((32, 32))[g.output.index]
    (32, 32)

Indices live on an unbounded grid: padding shifts the index map but never clips it, which
is the convention of the analytic receptive field (the field of a unit far from borders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["Graph", "Node", "SizeError"]


class SizeError(ValueError):
    """An input size the network cannot process; ``node`` names the layer, ``axis`` the axis."""

    def __init__(self, message: str, node: str, axis: int) -> None:
        super().__init__(message)
        self.node, self.axis = node, axis


@dataclass(eq=False)
class Node:
    """One operation.  ``op`` is one of the kinds below; the integers parametrise it per axis.

    Kinds and their index map (output index ``j`` → input interval ``[lo, hi]``):

    - ``input``: the network input.
    - ``conv`` (also pooling, padding, fully connected as convolution): ``j·s − pad_before +
      [0, d·(k − 1)]``; size ``⌊(n + pads − d·(k − 1) − 1)/s⌋ + 1``.
    - ``transpose`` (transposed convolution, stride ``s``, padding ``p``): inputs ``i`` with
      ``0 ≤ j + p − i·s < k``; size ``(n − 1)·s − 2p + k``.
    - ``interp`` (``nearest``: ``⌊j/s⌋``; ``linear``: the two neighbours of
      ``(j + ½)/s − ½``); size ``n·s``.
    - ``crop``: centre crop to the size of node ``ref``; ``j + (n − n_ref) // 2``.
    - ``merge`` (concatenation or sum of ``parents``, which must agree in size): identity per
      parent; the field is the hull over the parents.
    """

    index: int
    name: str
    type: str
    op: str
    parents: tuple[Node, ...]
    channels: int
    params: int = 0
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0
    pad_after: int = 0
    #: ``exact`` pooling demands an input size divisible by the stride (skips must align)
    exact: bool = False
    #: ``reflect`` padding needs ``pad < n``
    reflect: bool = False
    mode: str = ""
    ref: Node | None = None
    #: shown as a row in the per-layer table (activations and norms fold into their conv)
    row: bool = True
    #: cumulative stride relative to the input (input pixels per output step)
    scale: Fraction = field(default=Fraction(1))

    # ------------------------------------------------------------------ per-axis maps

    def out_size(self, sizes: Sequence[int], ref_size: int | None, axis: int) -> int:
        """Output size along ``axis`` from the parents' sizes (raises :class:`SizeError`)."""
        n = sizes[0]
        if self.op == "input":
            return n
        if self.op == "conv":
            if self.exact and n % self.stride:
                raise SizeError(
                    f"'{self.name}' pools by {self.stride} but gets size {n} (not divisible)",
                    self.name,
                    axis,
                )
            if self.reflect and max(self.pad_before, self.pad_after) >= n:
                raise SizeError(
                    f"'{self.name}' reflect-pads {max(self.pad_before, self.pad_after)} voxels "
                    f"but gets size {n}",
                    self.name,
                    axis,
                )
            reach = self.dilation * (self.kernel - 1) + 1
            total = n + self.pad_before + self.pad_after - reach
            if total < 0:
                raise SizeError(
                    f"'{self.name}' needs at least {reach - self.pad_before - self.pad_after} "
                    f"voxels but gets {n}",
                    self.name,
                    axis,
                )
            return total // self.stride + 1
        if self.op == "transpose":
            out = (n - 1) * self.stride - 2 * self.pad_before + self.kernel
        elif self.op == "interp":
            out = n * self.stride
        elif self.op == "crop":
            assert ref_size is not None
            if ref_size > n:
                raise SizeError(
                    f"'{self.name}' crops size {n} to {ref_size} (larger)", self.name, axis
                )
            out = ref_size
        elif self.op == "merge":
            if len(set(sizes)) > 1:
                raise SizeError(
                    f"'{self.name}' joins feature maps of sizes {list(sizes)} (must be equal)",
                    self.name,
                    axis,
                )
            out = n
        else:  # pragma: no cover - guarded by Graph
            raise AssertionError(self.op)
        if out <= 0:
            raise SizeError(f"'{self.name}' produces size {out}", self.name, axis)
        return out

    def back(self, lo: int, hi: int, parent_size: int, out_size: int) -> tuple[int, int]:
        """Input interval (in one parent's indices) read by output interval ``[lo, hi]``."""
        if self.op in ("input", "merge"):
            return lo, hi
        if self.op == "conv":
            start = -self.pad_before
            return lo * self.stride + start, hi * self.stride + start + self.dilation * (
                self.kernel - 1
            )
        if self.op == "transpose":
            s, p, k = self.stride, self.pad_before, self.kernel
            return -((k - 1 - lo - p) // s), (hi + p) // s  # ceil((lo+p-k+1)/s), floor((hi+p)/s)
        if self.op == "interp":
            s = self.stride
            if self.mode == "nearest":
                return lo // s, hi // s
            # align_corners=False: source coordinate (j + 1/2)/s − 1/2 = (2j + 1 − s) / (2s)
            first = (2 * lo + 1 - s) // (2 * s)
            num_hi = 2 * hi + 1 - s
            last = num_hi // (2 * s) + (1 if num_hi % (2 * s) else 0)
            return first, last
        if self.op == "crop":
            offset = (parent_size - out_size) // 2
            return lo + offset, hi + offset
        raise AssertionError(self.op)  # pragma: no cover

    @property
    def kernel_text(self) -> str:
        return "" if self.op in ("input", "merge", "crop") else str(self.kernel)


class Graph:
    """Builder and container of :class:`Node` s in forward (topological) order."""

    def __init__(self, dims: int, in_channels: int) -> None:
        self.dims = dims
        self.nodes: list[Node] = []
        self.input = self._add(
            Node(0, "input", "input", "input", (), in_channels, row=True, scale=Fraction(1))
        )
        self.output: Node = self.input

    def _add(self, node: Node) -> Node:
        node.index = len(self.nodes)
        if node.op != "input":
            names = {n.name for n in self.nodes}
            if node.name in names:
                raise ValueError(f"duplicate node name {node.name!r}")
        self.nodes.append(node)
        return node

    def conv(
        self,
        x: Node,
        name: str,
        *,
        channels: int,
        kernel: int,
        stride: int = 1,
        dilation: int = 1,
        pad: tuple[int, int] | str = (0, 0),
        params: int = 0,
        type: str = "conv",
        exact: bool = False,
        reflect: bool = False,
        row: bool = True,
    ) -> Node:
        """A convolution (or pooling / padding: same index map); ``pad`` may be ``"same"``."""
        if pad == "same":
            total = dilation * (kernel - 1)
            pad = (total // 2, total - total // 2)
        elif pad == "valid":
            pad = (0, 0)
        assert isinstance(pad, tuple)
        return self._add(
            Node(
                0,
                name,
                type,
                "conv",
                (x,),
                channels,
                params,
                kernel,
                stride,
                dilation,
                pad[0],
                pad[1],
                exact=exact,
                reflect=reflect,
                row=row,
                scale=x.scale * stride,
            )
        )

    def pool(
        self,
        x: Node,
        name: str,
        *,
        kernel: int,
        stride: int | None = None,
        dilation: int = 1,
        exact: bool = False,
        type: str = "max pool",
    ) -> Node:
        stride = kernel if stride is None else stride
        return self.conv(
            x,
            name,
            channels=x.channels,
            kernel=kernel,
            stride=stride,
            dilation=dilation,
            type=type,
            exact=exact,
        )

    def pad(self, x: Node, name: str, before: int, after: int, *, reflect: bool = False) -> Node:
        return self.conv(
            x,
            name,
            channels=x.channels,
            kernel=1,
            pad=(before, after),
            type="pad",
            reflect=reflect,
        )

    def transpose(
        self,
        x: Node,
        name: str,
        *,
        channels: int,
        kernel: int,
        stride: int,
        padding: int = 0,
        params: int = 0,
        type: str = "conv transpose",
    ) -> Node:
        return self._add(
            Node(
                0,
                name,
                type,
                "transpose",
                (x,),
                channels,
                params,
                kernel,
                stride,
                pad_before=padding,
                pad_after=padding,
                scale=x.scale / stride,
            )
        )

    def interp(self, x: Node, name: str, *, scale: int, mode: str = "linear") -> Node:
        return self._add(
            Node(
                0,
                name,
                f"upsample ({mode})",
                "interp",
                (x,),
                x.channels,
                0,
                kernel=1,
                stride=scale,
                mode=mode,
                scale=x.scale / scale,
            )
        )

    def crop(self, x: Node, ref: Node, name: str) -> Node:
        return self._add(
            Node(0, name, "crop", "crop", (x,), x.channels, ref=ref, row=False, scale=x.scale)
        )

    def merge(self, parents: Sequence[Node], name: str, *, kind: str = "concat") -> Node:
        """Concatenate (channels add up) or sum (``kind="add"``) feature maps."""
        scales = {p.scale for p in parents}
        if len(scales) != 1:
            raise ValueError(f"{name}: merging maps of different strides {sorted(scales)}")
        channels = (
            sum(p.channels for p in parents)
            if kind == "concat"
            else max(p.channels for p in parents)
        )
        return self._add(
            Node(0, name, kind, "merge", tuple(parents), channels, row=True, scale=parents[0].scale)
        )

    def set_output(self, node: Node) -> None:
        self.output = node

    # ------------------------------------------------------------------ evaluation

    def sizes(self, input_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial size of every node's output for ``input_size`` (indexed like ``nodes``).

        Raises:
            SizeError: some layer cannot process the size it receives.
        """
        if len(input_size) != self.dims:
            raise ValueError(f"input size {list(input_size)} has not {self.dims} entries")
        out: list[tuple[int, ...]] = []
        for node in self.nodes:
            if node.op == "input":
                out.append(tuple(int(s) for s in input_size))
                continue
            per_axis = []
            for axis in range(self.dims):
                parent_sizes = [out[p.index][axis] for p in node.parents]
                ref = out[node.ref.index][axis] if node.ref is not None else None
                per_axis.append(node.out_size(parent_sizes, ref, axis))
            out.append(tuple(per_axis))
        return out

    def period(self, node: Node) -> int:
        """Positions of ``node`` after which its index map repeats (stride grids above it)."""
        period = 1
        for anc in self.ancestors(node):
            period = math.lcm(period, math.ceil(anc.scale / node.scale))
        return period

    def ancestors(self, node: Node) -> list[Node]:
        seen: dict[int, Node] = {}
        stack = [node]
        while stack:
            n = stack.pop()
            if n.index in seen:
                continue
            seen[n.index] = n
            stack.extend(n.parents)
        return [seen[i] for i in sorted(seen)]

    def field(
        self, node: Node, lo: int, hi: int, sizes: Sequence[Sequence[int]], axis: int
    ) -> tuple[int, int]:
        """Hull of the input indices that output indices ``[lo, hi]`` of ``node`` depend on."""
        memo: dict[tuple[int, int, int], tuple[int, int]] = {}

        def walk(n: Node, a: int, b: int) -> tuple[int, int]:
            key = (n.index, a, b)
            if key in memo:
                return memo[key]
            if n.op == "input":
                result = (a, b)
            else:
                los, his = [], []
                for parent in n.parents:
                    pa, pb = n.back(a, b, sizes[parent.index][axis], sizes[n.index][axis])
                    x, y = walk(parent, pa, pb)
                    los.append(x)
                    his.append(y)
                result = (min(los), max(his))
            memo[key] = result
            return result

        return walk(node, lo, hi)
