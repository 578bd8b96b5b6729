"""A torch-free description of a network's spatial index maps, for sizes and receptive fields.

Every architecture in :mod:`segcli.models` describes its forward pass as a small DAG of
nodes (convolutions, poolings, up-samplings, crops, merges).  Each node knows, per spatial
axis, (a) the output size for an input size and (b) which input indices an output index
reads — an interval, since every operation is separable and local.  From that
:mod:`segcli.receptive_field.analytic` derives sizes, jumps and receptive fields exactly.

    >>> from segcli.models.graph import Graph
    >>> g = Graph(dims=2, in_channels=1)
    >>> x = g.conv(g.input, "conv1", channels=8, kernel=3, pad=(1, 1), params=80)
    >>> g.set_output(g.conv(x, "head", channels=2, kernel=1, params=18))
    >>> g.sizes((32, 32))[g.output.index]
    (32, 32)

Indices live on an unbounded grid: padding shifts the index map but never clips it, which
is the convention of the analytic receptive field (the field of a unit far from borders).

Kernel, stride, dilation and padding are either one integer for every axis or a tuple with
one entry per axis (array axis order), for anisotropic networks such as a U-Net that pools
``(1, 2, 2)`` at its first stage: each axis has its own index map and its own size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["Graph", "Node", "SizeError", "per_axis"]

#: one integer for every axis, or one per axis
PerAxis = int | tuple[int, ...]


def per_axis(value: int | Sequence[int], dims: int, what: str = "value") -> PerAxis:
    """``value`` as stored in a :class:`Node`: an int when equal on every axis, else a tuple.

    Raises:
        ValueError: a sequence whose length is not ``dims``.
    """
    if isinstance(value, int):
        return value
    values = tuple(int(v) for v in value)
    if len(values) != dims:
        raise ValueError(f"{what} {list(values)} has {len(values)} entries, expected {dims}")
    return values[0] if len(set(values)) == 1 else values


def _at(value: PerAxis, axis: int) -> int:
    return value if isinstance(value, int) else value[axis]


class SizeError(ValueError):
    """An input size the network cannot process; ``node`` names the layer, ``axis`` the axis."""

    def __init__(self, message: str, node: str, axis: int) -> None:
        super().__init__(message)
        self.node, self.axis = node, axis


@dataclass(eq=False)
class Node:
    """One operation.  ``op`` is one of the kinds below; the integers parametrise it per axis.

    Kinds and their index map (output index ``j`` → input interval ``[lo, hi]``), per axis
    with that axis's ``k``, ``s``, ``d`` and pads:

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
    kernel: PerAxis = 1
    stride: PerAxis = 1
    dilation: PerAxis = 1
    pad_before: PerAxis = 0
    pad_after: PerAxis = 0
    #: ``exact`` pooling demands an input size divisible by the stride (skips must align)
    exact: bool = False
    #: ``reflect`` padding needs ``pad < n``
    reflect: bool = False
    mode: str = ""
    ref: Node | None = None
    #: shown as a row in the per-layer table (activations and norms fold into their conv)
    row: bool = True
    #: cumulative stride per axis relative to the input (input pixels per output step)
    scales: tuple[Fraction, ...] = field(default=(Fraction(1),))

    @property
    def scale(self) -> Fraction:
        """The cumulative stride when it is the same on every axis (see ``scales``).

        Raises:
            ValueError: the node's strides differ between axes.
        """
        if len(set(self.scales)) != 1:
            raise ValueError(f"'{self.name}' has per-axis strides {self.scales}; use .scales")
        return self.scales[0]

    # ------------------------------------------------------------------ per-axis maps

    def out_size(self, sizes: Sequence[int], ref_size: int | None, axis: int) -> int:
        """Output size along ``axis`` from the parents' sizes (raises :class:`SizeError`)."""
        n = sizes[0]
        if self.op == "input":
            return n
        k, s, d = _at(self.kernel, axis), _at(self.stride, axis), _at(self.dilation, axis)
        before, after = _at(self.pad_before, axis), _at(self.pad_after, axis)
        if self.op == "conv":
            if self.exact and n % s:
                raise SizeError(
                    f"'{self.name}' pools by {s} but gets size {n} (not divisible)",
                    self.name,
                    axis,
                )
            if self.reflect and max(before, after) >= n:
                raise SizeError(
                    f"'{self.name}' reflect-pads {max(before, after)} voxels but gets size {n}",
                    self.name,
                    axis,
                )
            reach = d * (k - 1) + 1
            total = n + before + after - reach
            if total < 0:
                raise SizeError(
                    f"'{self.name}' needs at least {reach - before - after} voxels but gets {n}",
                    self.name,
                    axis,
                )
            return total // s + 1
        if self.op == "transpose":
            out = (n - 1) * s - 2 * before + k
        elif self.op == "interp":
            out = n * s
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

    def back(
        self, lo: int, hi: int, parent_size: int, out_size: int, axis: int = 0
    ) -> tuple[int, int]:
        """Input interval (in one parent's indices) read by output interval ``[lo, hi]``."""
        if self.op in ("input", "merge"):
            return lo, hi
        k, s, d = _at(self.kernel, axis), _at(self.stride, axis), _at(self.dilation, axis)
        if self.op == "conv":
            start = -_at(self.pad_before, axis)
            return lo * s + start, hi * s + start + d * (k - 1)
        if self.op == "transpose":
            p = _at(self.pad_before, axis)
            return -((k - 1 - lo - p) // s), (hi + p) // s  # ceil((lo+p-k+1)/s), floor((hi+p)/s)
        if self.op == "interp":
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
        """``3``, or ``1×3×3`` for a per-axis kernel; empty where no kernel applies."""
        if self.op in ("input", "merge", "crop"):
            return ""
        return (
            "×".join(map(str, self.kernel)) if isinstance(self.kernel, tuple) else str(self.kernel)
        )


class Graph:
    """Builder and container of :class:`Node` s in forward (topological) order.

    Kernel, stride, dilation, padding and scale arguments take one int for every axis or a
    sequence with one entry per axis.
    """

    def __init__(self, dims: int, in_channels: int) -> None:
        self.dims = dims
        self.nodes: list[Node] = []
        self.input = self._add(
            Node(
                0,
                "input",
                "input",
                "input",
                (),
                in_channels,
                row=True,
                scales=(Fraction(1),) * dims,
            )
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

    def _axes(self, value: int | Sequence[int], what: str) -> PerAxis:
        return per_axis(value, self.dims, what)

    def conv(
        self,
        x: Node,
        name: str,
        *,
        channels: int,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        pad: tuple[int, int] | tuple[Sequence[int], Sequence[int]] | str = (0, 0),
        params: int = 0,
        type: str = "conv",
        exact: bool = False,
        reflect: bool = False,
        row: bool = True,
    ) -> Node:
        """A convolution (or pooling / padding: same index map); ``pad`` may be ``"same"``.

        ``pad`` is ``(before, after)``, each an int or one int per axis, or ``"same"``
        (``d·(k − 1)`` in total per axis, ``⌊total/2⌋`` before) or ``"valid"``.
        """
        k, s, d = (
            self._axes(kernel, f"{name}: kernel"),
            self._axes(stride, f"{name}: stride"),
            self._axes(dilation, f"{name}: dilation"),
        )
        if pad == "same":
            totals = [_at(d, a) * (_at(k, a) - 1) for a in range(self.dims)]
            before = self._axes([t // 2 for t in totals], name)
            after = self._axes([t - t // 2 for t in totals], name)
        elif pad == "valid":
            before, after = 0, 0
        else:
            assert isinstance(pad, tuple)
            before = self._axes(pad[0], f"{name}: padding")
            after = self._axes(pad[1], f"{name}: padding")
        return self._add(
            Node(
                0,
                name,
                type,
                "conv",
                (x,),
                channels,
                params,
                k,
                s,
                d,
                before,
                after,
                exact=exact,
                reflect=reflect,
                row=row,
                scales=tuple(x.scales[a] * _at(s, a) for a in range(self.dims)),
            )
        )

    def pool(
        self,
        x: Node,
        name: str,
        *,
        kernel: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        dilation: int | Sequence[int] = 1,
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
        kernel: int | Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int] = 0,
        params: int = 0,
        type: str = "conv transpose",
    ) -> Node:
        s = self._axes(stride, f"{name}: stride")
        p = self._axes(padding, f"{name}: padding")
        return self._add(
            Node(
                0,
                name,
                type,
                "transpose",
                (x,),
                channels,
                params,
                self._axes(kernel, f"{name}: kernel"),
                s,
                pad_before=p,
                pad_after=p,
                scales=tuple(x.scales[a] / _at(s, a) for a in range(self.dims)),
            )
        )

    def interp(
        self, x: Node, name: str, *, scale: int | Sequence[int], mode: str = "linear"
    ) -> Node:
        s = self._axes(scale, f"{name}: scale")
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
                stride=s,
                mode=mode,
                scales=tuple(x.scales[a] / _at(s, a) for a in range(self.dims)),
            )
        )

    def crop(self, x: Node, ref: Node, name: str) -> Node:
        return self._add(
            Node(0, name, "crop", "crop", (x,), x.channels, ref=ref, row=False, scales=x.scales)
        )

    def merge(self, parents: Sequence[Node], name: str, *, kind: str = "concat") -> Node:
        """Concatenate (channels add up) or sum (``kind="add"``) feature maps."""
        scales = {p.scales for p in parents}
        if len(scales) != 1:
            shown = sorted(tuple(str(v) for v in sc) for sc in scales)
            raise ValueError(f"{name}: merging maps of different strides {shown}")
        channels = (
            sum(p.channels for p in parents)
            if kind == "concat"
            else max(p.channels for p in parents)
        )
        return self._add(
            Node(
                0,
                name,
                kind,
                "merge",
                tuple(parents),
                channels,
                row=True,
                scales=parents[0].scales,
            )
        )

    def set_output(self, node: Node) -> None:
        self.output = node

    # ------------------------------------------------------------------ evaluation

    def sizes_along(self, n: int, axis: int) -> list[int]:
        """Size of every node's output along ``axis`` for input length ``n`` on that axis.

        Axes are independent (every operation is separable), so this is one column of
        :meth:`sizes`, and the way to find valid lengths per axis of an anisotropic network.

        Raises:
            SizeError: some layer cannot process the length it receives.
        """
        out: list[int] = []
        for node in self.nodes:
            if node.op == "input":
                out.append(int(n))
                continue
            parent_sizes = [out[p.index] for p in node.parents]
            ref = out[node.ref.index] if node.ref is not None else None
            out.append(node.out_size(parent_sizes, ref, axis))
        return out

    def fits(self, n: int, axis: int) -> bool:
        """Whether input length ``n`` along ``axis`` passes through every layer."""
        try:
            self.sizes_along(n, axis)
        except SizeError:
            return False
        return True

    def sizes(self, input_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial size of every node's output for ``input_size`` (indexed like ``nodes``).

        Raises:
            SizeError: some layer cannot process the size it receives (the first failing
                axis in axis order).
        """
        if len(input_size) != self.dims:
            raise ValueError(f"input size {list(input_size)} has not {self.dims} entries")
        columns = [self.sizes_along(int(n), axis) for axis, n in enumerate(input_size)]
        return [tuple(col[i] for col in columns) for i in range(len(self.nodes))]

    def total_stride(self) -> tuple[int, ...]:
        """Per axis, the least common multiple of the (rounded-up) strides of all nodes.

        Input sizes of same-padding networks with exact pooling must be multiples of it
        (``2**depth`` per axis for an isotropic U-Net, the product of the per-stage strides
        along each axis for an anisotropic one).
        """
        strides = [1] * self.dims
        for node in self.nodes:
            for axis in range(self.dims):
                strides[axis] = math.lcm(strides[axis], math.ceil(node.scales[axis]))
        return tuple(strides)

    def period(self, node: Node, axis: int | None = None) -> int:
        """Positions of ``node`` after which its index map repeats (stride grids above it).

        Along ``axis``; without one, the common period of all axes.
        """
        axes = range(self.dims) if axis is None else (axis,)
        period = 1
        for anc in self.ancestors(node):
            for a in axes:
                period = math.lcm(period, math.ceil(anc.scales[a] / node.scales[a]))
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
                    pa, pb = n.back(
                        a, b, sizes[parent.index][axis], sizes[n.index][axis], axis=axis
                    )
                    x, y = walk(parent, pa, pb)
                    los.append(x)
                    his.append(y)
                result = (min(los), max(his))
            memo[key] = result
            return result

        return walk(node, lo, hi)
