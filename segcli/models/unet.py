"""U-Net (Ronneberger, Fischer & Brox 2015) and its modern variants, 2D and 3D.

    >>> import torch
    >>> from segcli.config.schema import UNetSpec
    >>> from segcli.models import build
    >>> net = build(UNetSpec(filters=8, depth=3, norm="instance"))
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 2, 32, 32])

Encoder: ``depth`` max-poolings (2×2), each level a block of ``convs_per_block`` k×k
convolutions whose width doubles per level (``filters·2**level``, capped by ``max_filters``).
Decoder: upsampling (``transpose``: 2×2 transposed convolution halving the channels, as in the
paper; ``interp``: (bi/tri)linear interpolation followed by a 1×1 convolution), concatenation
with the encoder's skip (centre-cropped with ``valid`` padding), a block.  A 1×1 head gives the
logits.  ``residual`` blocks add a (1×1-projected, cropped) shortcut before the last
activation.  With ``valid`` padding, 64 filters, depth 4, 1 input channel, 2 classes, no norm
and ReLU this is the paper's network: 31,030,658 parameters, 572×572 → 388×388.

Anisotropic networks (nnU-Net's ``pool_op_kernel_sizes`` / ``conv_kernel_sizes``): ``strides``
gives each max-pooling its own stride per axis — ``(1, 2, 2)`` pools in-plane only — and the
matching upsampling uses the same per-axis factor (transposed-convolution kernel = stride, as
in nnU-Net); ``kernel_sizes`` gives each resolution stage (encoder blocks and bottleneck) its
own kernel per axis, and each decoder block reuses the kernel of the encoder stage at its
resolution.  ``same`` padding is per axis (``k // 2``); ``valid`` crops skips per axis.
Leaving both out gives exactly the isotropic network (same modules and parameter names).

    >>> net = build(UNetSpec(dims=3, filters=4, strides=[[1, 2, 2], [2, 2, 2]],
    ...                      kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]]))
    >>> net(torch.zeros(1, 1, 4, 16, 16)).shape
    torch.Size([1, 2, 4, 16, 16])

Deep supervision: in training mode, forward returns ``[full-res, 1/2, 1/4, ...]`` logits (one
auxiliary 1×1 head per decoder stage below full resolution, ``depth − 1`` of them; with
``strides`` the i-th is coarser by the cumulative per-axis stride
:attr:`UNet.deep_supervision_scales`); in eval mode only the full-resolution tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from segcli.config.schema import UNetSpec
from segcli.errors import SpecError
from segcli.models import layers
from segcli.models.base import ARCHITECTURES, SegmentationNetwork
from segcli.models.graph import Graph, Node

__all__ = ["ConvBlock", "HeadGrid", "UNet", "build_unet", "supervision_grids"]


class HeadGrid(NamedTuple):
    """Where one network output sits on the input grid, per axis: output voxel ``j`` is
    centred on input voxel ``offset + j·stride`` (:meth:`UNet.deep_supervision_grids`)."""

    offset: tuple[int, ...]
    stride: tuple[int, ...]


class ConvBlock(nn.Module):
    """``n`` × (conv → norm → activation), optionally residual, then dropout.

    Residual: the shortcut (a 1×1 convolution when the width changes, centre-cropped with
    ``valid`` padding) is added before the last activation (He et al. 2016).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        *,
        convs: int,
        kernel_size: int | Sequence[int],
        padding: str,
        norm: str,
        activation: str,
        residual: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.residual = residual
        pad = "same" if padding == "same" else 0
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        channels = in_channels
        for _ in range(convs):
            self.convs.append(layers.conv(dims, channels, out_channels, kernel_size, padding=pad))
            self.norms.append(layers.norm(norm, dims, out_channels))
            self.acts.append(layers.activation(activation))
            channels = out_channels
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (
                layers.conv(dims, in_channels, out_channels, 1)
                if in_channels != out_channels
                else nn.Identity()
            )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        last = len(self.convs) - 1
        for i, (conv, norm, act) in enumerate(zip(self.convs, self.norms, self.acts, strict=True)):
            y = norm(conv(y))
            if i == last and self.shortcut is not None:
                y = y + layers.center_crop(self.shortcut(x), y.shape[2:])
            y = act(y)
        return self.dropout(y)


class UNet(SegmentationNetwork):
    """Encoder–decoder with skip connections; see the module docstring for the options.

    Shapes: ``(B, C, *spatial)`` → ``(B, num_classes, *out)``; ``out = spatial`` with ``same``
    padding (each size must be divisible by ``2**depth``, or with ``strides`` by the product of
    the strides along its axis), smaller with ``valid`` padding
    (:func:`segcli.models.output_size` gives it and which input sizes work).

    Args:
        strides: ``depth`` entries, one pooling stride per axis each (default 2 everywhere).
        kernel_sizes: ``depth + 1`` entries, one kernel size per axis each (default
            ``kernel_size`` everywhere).  Other arguments: see :class:`UNetSpec`.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        num_classes: int,
        *,
        filters: int = 32,
        depth: int = 4,
        max_filters: int | None = None,
        convs_per_block: int = 2,
        kernel_size: int = 3,
        padding: str = "same",
        upsample: str = "transpose",
        residual: bool = False,
        norm: str = "instance",
        activation: str = "leaky_relu",
        dropout: float = 0.0,
        deep_supervision: bool = False,
        strides: Sequence[Sequence[int]] | None = None,
        kernel_sizes: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if padding == "same" and kernel_sizes is None and kernel_size % 2 == 0:
            raise SpecError(
                f"model.kernel_size {kernel_size}: a same-padding U-Net needs an odd kernel size "
                "(use 3 or 5, or padding: valid)"
            )
        self.dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.depth, self.padding, self.upsample_kind = depth, padding, upsample
        self.kernel_size, self.convs_per_block = kernel_size, convs_per_block
        #: per downsampling, the pooling stride per axis
        self.strides = _stages(strides, depth, (2,) * dims, "model.strides", dims)
        #: per resolution stage (encoder levels 0..depth), the kernel per axis
        self.kernel_sizes = _stages(
            kernel_sizes, depth + 1, (kernel_size,) * dims, "model.kernel_sizes", dims
        )
        if padding == "same" and any(k % 2 == 0 for ks in self.kernel_sizes for k in ks):
            raise SpecError(
                f"model.kernel_sizes {[list(k) for k in self.kernel_sizes]}: a same-padding "
                "U-Net needs odd kernel sizes (or padding: valid)"
            )
        self.deep_supervision = deep_supervision
        widths = [filters * 2**level for level in range(depth + 1)]
        if max_filters is not None:
            widths = [min(w, max_filters) for w in widths]
        self.widths = widths

        def block(cin: int, cout: int, level: int) -> ConvBlock:
            return ConvBlock(
                dims,
                cin,
                cout,
                convs=convs_per_block,
                kernel_size=self.kernel_sizes[level],
                padding=padding,
                norm=norm,
                activation=activation,
                residual=residual,
                dropout=dropout,
            )

        self.encoder = nn.ModuleList()
        channels = in_channels
        for level, width in enumerate(widths):
            self.encoder.append(block(channels, width, level))
            channels = width
        # pools[i] goes from level i to level i + 1 (parameter-free: no state_dict entries)
        self.pools = nn.ModuleList(layers.pool(dims, stride) for stride in self.strides)
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(depth - 1, -1, -1):  # deepest first
            skip, stride = widths[level], self.strides[level]
            if upsample == "transpose":
                self.ups.append(layers.conv_transpose(dims, channels, skip, stride, stride=stride))
            else:
                self.ups.append(
                    nn.Sequential(
                        layers.Interpolate(dims, stride), layers.conv(dims, channels, skip, 1)
                    )
                )
            self.decoder.append(block(2 * skip, skip, level))
            channels = skip
        self.head = layers.conv(dims, channels, num_classes, 1)
        # auxiliary heads for decoder stages at 1/2, 1/4, ... resolution (highest first)
        self.aux_heads = (
            nn.ModuleList(
                layers.conv(dims, widths[level], num_classes, 1) for level in range(1, depth)
            )
            if deep_supervision
            else nn.ModuleList()
        )

    @property
    def deep_supervision_scales(self) -> list[tuple[int, ...]]:
        """Per output of the training-mode forward, its cumulative stride per axis.

        ``[(1, …, 1), s₀, s₀·s₁, …]`` (``depth`` entries; the first is the full-resolution
        output): with ``same`` padding, output ``i`` has ``size // scales[i]`` voxels per axis,
        and a target for it keeps every ``scales[i]``-th voxel.
        """
        scales = [(1,) * self.dims]
        for stride in self.strides[: self.depth - 1]:
            scales.append(tuple(a * b for a, b in zip(scales[-1], stride, strict=True)))
        return scales

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = self.pools[level - 1](x)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        decoded = []
        for up, block in zip(self.ups, self.decoder, strict=True):
            x = up(x)
            skip = skips.pop()
            x = block(torch.cat([layers.center_crop(skip, x.shape[2:]), x], dim=1))
            decoded.append(x)
        out = self.head(x)
        if not (self.deep_supervision and self.training):
            return out
        # decoded[-1] is full resolution; decoded[-2] half, ...
        aux = [head(decoded[-2 - i]) for i, head in enumerate(self.aux_heads)]
        return [out, *aux]

    # ------------------------------------------------------------------ field graph

    def _block_graph(self, g: Graph, x: Node, block: ConvBlock, name: str, level: int) -> Node:
        same = self.padding == "same"
        inp = x
        for i, conv in enumerate(block.convs):
            params = layers.count_parameters(conv, block.norms[i], block.acts[i])
            if i == len(block.convs) - 1 and block.shortcut is not None:
                params += layers.count_parameters(block.shortcut)
            x = g.conv(
                x,
                f"{name}.conv{i + 1}",
                channels=conv.out_channels,
                kernel=self.kernel_sizes[level],
                pad="same" if same else "valid",
                params=params,
            )
        if block.shortcut is not None:
            short = g.conv(inp, f"{name}.shortcut", channels=x.channels, kernel=1, row=False)
            short = g.crop(short, x, f"{name}.shortcut_crop")
            x = g.merge([x, short], f"{name}.residual", kind="add")
        return x

    def field_graph(self) -> Graph:
        return self._field_graph()[0]

    def deep_supervision_grids(self, input_size: Sequence[int]) -> list[HeadGrid]:
        """Where each output of the training-mode forward sits on an ``input_size`` patch.

        Per output (full resolution first, as :attr:`deep_supervision_scales`), per axis
        ``(offset, stride)``: output voxel ``j`` stands for input voxel ``offset + j·stride``.
        That voxel is found along the skip path (the encoder down to the output's stage, then
        its decoder block, no deeper stage): the centre of each convolution's window and the
        first voxel of each pooled block — nnU-Net's nearest-neighbour convention, under which
        ``same`` padding gives offsets 0 (a target keeps every ``stride``-th voxel) and
        ``valid`` padding the central crop of each stage.  Computed from :meth:`field_graph`.

        Raises:
            SizeError: ``input_size`` does not pass through the network.
        """
        g, decoded = self._field_graph()
        sizes = g.sizes(tuple(int(n) for n in input_size))
        # decoded[-1] is the block under the full-resolution head, decoded[-2] the 1/2 one, ...
        nodes = [g.output] + [decoded[-2 - i] for i in range(len(self.aux_heads))]
        grids = []
        for node, scale in zip(nodes, self.deep_supervision_scales, strict=False):
            offsets = []
            for axis in range(self.dims):
                lo, hi = _skip_path_field(node, sizes, axis)
                # field of voxel 0 = [lo, hi]; each pooled block adds (stride - 1) / 2 to its
                # centre in all, which the first-voxel convention drops
                offsets.append((lo + hi - (scale[axis] - 1)) // 2)
            grids.append(HeadGrid(tuple(offsets), scale))
        return grids

    def _field_graph(self) -> tuple[Graph, list[Node]]:
        """The field graph and the output node of each decoder block (deepest first)."""
        g = Graph(self.dims, self.in_channels)
        x = g.input
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = g.pool(x, f"down{level}.pool", kernel=self.strides[level - 1], exact=True)
            x = self._block_graph(g, x, block, f"down{level}" if level else "enc0", level)
            skips.append(x)
        skips.pop()
        decoded: list[Node] = []
        for i, (up, block) in enumerate(zip(self.ups, self.decoder, strict=True)):
            level = self.depth - 1 - i
            if self.upsample_kind == "transpose":
                x = g.transpose(
                    x,
                    f"up{level}.upconv",
                    channels=up.out_channels,
                    kernel=self.strides[level],
                    stride=self.strides[level],
                    params=layers.count_parameters(up),
                )
            else:
                x = g.interp(x, f"up{level}.interp", scale=self.strides[level])
                x = g.conv(
                    x,
                    f"up{level}.conv",
                    channels=up[1].out_channels,
                    kernel=1,
                    params=layers.count_parameters(up),
                )
            skip = g.crop(skips.pop(), x, f"up{level}.skip_crop")
            x = g.merge([skip, x], f"up{level}.concat")
            x = self._block_graph(g, x, block, f"up{level}", level)
            decoded.append(x)
        g.set_output(
            g.conv(
                x,
                "head",
                channels=self.num_classes,
                kernel=1,
                params=layers.count_parameters(self.head, self.aux_heads),
            )
        )
        return g, decoded


def supervision_grids(model: nn.Module, input_size: Sequence[int]) -> list[HeadGrid] | None:
    """:meth:`UNet.deep_supervision_grids` for a valid-padding U-Net with deep supervision;
    None for every other network (its outputs cover the patch: downsampling is exact)."""
    if isinstance(model, UNet) and model.deep_supervision and model.padding == "valid":
        return model.deep_supervision_grids(input_size)
    return None


def _skip_path_field(node: Node, sizes: list[tuple[int, ...]], axis: int) -> tuple[int, int]:
    """Input interval read by voxel 0 of ``node`` along first parents only: at a concatenation
    the skip (``[skip, upsampled]``), at a residual sum the main path."""
    lo = hi = 0
    while node.op != "input":
        parent = node.parents[0]
        lo, hi = node.back(lo, hi, sizes[parent.index][axis], sizes[node.index][axis], axis=axis)
        node = parent
    return lo, hi


@ARCHITECTURES.register("unet")
def build_unet(spec: UNetSpec) -> UNet:
    """Build a :class:`UNet` from its spec."""
    return UNet(
        spec.dims,
        spec.in_channels,
        spec.num_classes,
        filters=spec.filters,
        depth=spec.depth,
        max_filters=spec.max_filters,
        convs_per_block=spec.convs_per_block,
        kernel_size=spec.kernel_size,
        padding=spec.padding,
        upsample=spec.upsample,
        residual=spec.residual,
        norm=spec.norm,
        activation=spec.activation,
        dropout=spec.dropout,
        deep_supervision=spec.deep_supervision,
        strides=spec.strides,
        kernel_sizes=spec.kernel_sizes,
    )


def _stages(
    given: Sequence[Sequence[int]] | None,
    count: int,
    default: tuple[int, ...],
    key: str,
    dims: int,
) -> list[tuple[int, ...]]:
    """``given`` as ``count`` per-axis tuples, or ``count`` copies of ``default``.

    Raises:
        SpecError: wrong number of stages or of axes (the spec validates this first; this
            guards direct construction).
    """
    if given is None:
        return [default] * count
    stages = [tuple(int(v) for v in entry) for entry in given]
    if len(stages) != count or any(len(entry) != dims for entry in stages):
        raise SpecError(
            f"{key} {[list(e) for e in stages]}: expected {count} entries of {dims} values each"
        )
    if any(v < 1 for entry in stages for v in entry):
        raise SpecError(f"{key} {[list(e) for e in stages]}: values must be 1 or more")
    return stages
