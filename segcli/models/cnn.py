"""The lecture's all-convolutional networks: ``cnn`` (plain) and ``dilated`` (Yu & Koltun 2016).

    >>> import torch
    >>> from segcli.config.schema import DilatedSpec
    >>> from segcli.models import build
    >>> net = build(DilatedSpec(dilations=[1, 2, 4], filters=8))
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 2, 32, 32])

``n`` k×k convolutions (each followed by normalisation and activation), then a 1×1 head that
outputs one logit per class.  With dilation rates 1, 2, 4 the receptive field grows from 7×7 to
15×15 at exactly the same parameter count.  Padding: ``same`` pads every layer (output = input
size); ``front`` pads the input once by the total shrinkage of the valid convolutions (the
lecture's formulation; same output size, different border behaviour); ``valid`` pads nothing
(the output shrinks by ``Σ d·(k − 1)`` per axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segcli.config.schema import CNNSpec, DilatedSpec
from segcli.models import layers
from segcli.models.base import ARCHITECTURES, SegmentationNetwork
from segcli.models.graph import Graph

__all__ = ["ConvNet", "build_cnn", "build_dilated"]


class ConvNet(SegmentationNetwork):
    """Stacked k×k convolutions with per-layer dilation, then a 1×1 classification head.

    Args:
        dims: 2 or 3.
        in_channels: input channels C.
        num_classes: output channels (logits, no softmax).
        filters: feature maps of every hidden layer.
        dilations: one dilation rate per hidden layer (all 1 for the plain CNN).
        kernel_size: k of every hidden layer.
        padding: ``same`` | ``front`` | ``valid`` (see the module docstring).
        padding_mode: ``zeros`` | ``reflect`` | ``replicate``.
        activation, norm: as in :mod:`segcli.models.layers`.

    Shapes: ``(B, C, *spatial)`` → ``(B, num_classes, *out)``, ``out = spatial`` unless
    ``padding="valid"``, where ``out = spatial − Σ d·(k − 1)``.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        num_classes: int,
        *,
        filters: int,
        dilations: Sequence[int],
        kernel_size: int = 3,
        padding: str = "same",
        padding_mode: str = "zeros",
        activation: str = "relu",
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.kernel_size, self.padding_kind, self.padding_mode = kernel_size, padding, padding_mode
        self.dilations = tuple(dilations)
        total = sum(d * (kernel_size - 1) for d in self.dilations)
        before = total // 2 if padding == "front" else 0
        after = total - before if padding == "front" else 0
        self.pad = layers.Pad(dims, before, after, mode=padding_mode)
        blocks = []
        channels = in_channels
        for d in self.dilations:
            blocks.append(
                nn.Sequential(
                    layers.conv(
                        dims,
                        channels,
                        filters,
                        kernel_size,
                        dilation=d,
                        padding="same" if padding == "same" else 0,
                        padding_mode=padding_mode,
                    ),
                    layers.norm(norm, dims, filters),
                    layers.activation(activation),
                )
            )
            channels = filters
        self.blocks = nn.ModuleList(blocks)
        self.head = layers.conv(dims, channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def field_graph(self) -> Graph:
        g = Graph(self.dims, self.in_channels)
        x = g.input
        if self.pad.before or self.pad.after:
            x = g.pad(
                x, "pad", self.pad.before, self.pad.after, reflect=self.padding_mode == "reflect"
            )
        for i, (d, block) in enumerate(zip(self.dilations, self.blocks, strict=True)):
            same = self.padding_kind == "same"
            x = g.conv(
                x,
                f"conv{i + 1}",
                channels=block[0].out_channels,
                kernel=self.kernel_size,
                dilation=d,
                pad="same" if same else "valid",
                params=layers.count_parameters(block),
                reflect=same and self.padding_mode == "reflect",
                type="conv" if d == 1 else f"conv (dilation {d})",
            )
        g.set_output(
            g.conv(
                x,
                "head",
                channels=self.num_classes,
                kernel=1,
                params=layers.count_parameters(self.head),
            )
        )
        return g


@ARCHITECTURES.register("cnn")
def build_cnn(spec: CNNSpec) -> ConvNet:
    """The lecture's plain CNN: ``spec.layers`` convolutions without dilation."""
    return ConvNet(
        spec.dims,
        spec.in_channels,
        spec.num_classes,
        filters=spec.filters,
        dilations=[1] * spec.layers,
        kernel_size=spec.kernel_size,
        padding=spec.padding,
        padding_mode=spec.pad_mode,
        activation=spec.activation,
        norm=spec.norm,
    )


@ARCHITECTURES.register("dilated")
def build_dilated(spec: DilatedSpec) -> ConvNet:
    """One convolution per entry of ``spec.dilations`` (Yu & Koltun 2016)."""
    return ConvNet(
        spec.dims,
        spec.in_channels,
        spec.num_classes,
        filters=spec.filters,
        dilations=spec.dilations,
        kernel_size=spec.kernel_size,
        padding=spec.padding,
        padding_mode=spec.pad_mode,
        activation=spec.activation,
        norm=spec.norm,
    )
