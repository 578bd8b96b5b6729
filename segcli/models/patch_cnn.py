"""Ciresan et al. (NIPS 2012): the sliding-window pixel classifier of the lecture's table.

    >>> import torch
    >>> from segcli.config.schema import PatchCNNSpec
    >>> from segcli.models import build
    >>> build(PatchCNNSpec(mode="window"))(torch.zeros(1, 1, 95, 95)).shape   # one window
    torch.Size([1, 2, 1, 1])
    >>> build(PatchCNNSpec(mode="dense"))(torch.zeros(1, 1, 64, 64)).shape    # every pixel
    torch.Size([1, 2, 64, 64])

The network (defaults = the lecture): a 95×95 window; four stages of convolution (48 maps;
kernels 4, 5, 4, 4) and 2×2 max-pooling (92 → 46 → 42 → 21 → 18 → 9 → 6 → 3); a fully
connected layer of 200 units and one of 2 (one logit per class).  The fully connected layers
are convolutions (kernel = the 3×3 map left, then 1×1), so the same weights run over any image.

Two modes, same parameters (a checkpoint of one loads into the other):

- ``window`` — the classifier itself.  On a 95×95 input it gives one prediction (for the
  window's centre pixel); on a larger image it runs fully convolutionally with stride 16 (one
  prediction per 16 pixels, the classic "shift" problem).
- ``dense`` — "filter rarefaction" (a.k.a. à-trous / shift-and-stitch): every pooling runs with
  stride 1 and every later layer is dilated by the product of the strides before it.  The output
  then holds one prediction per input pixel, each *exactly* the window classifier applied to the
  window centred on that pixel (``padding: same`` pads the image by half a window — zeros,
  reflection or replication — so output size = input size; ``valid`` shrinks by 94).

Training: use ``dense`` with ordinary patches (``data.patch_size`` e.g. [64, 64]) and a
per-pixel loss — every pixel of a patch is then one training sample of the window classifier
(Ciresan's per-pixel samples, computed without redundancy; class balance comes from
``data.foreground_fraction`` instead of sample re-weighting).  Predicting with ``dense`` gives
the same result as sliding the window classifier over every pixel, orders of magnitude faster.
"""

from __future__ import annotations

import torch
from torch import nn

from segcli.config.schema import PatchCNNSpec
from segcli.errors import SpecError
from segcli.models import layers
from segcli.models.base import ARCHITECTURES, SegmentationNetwork
from segcli.models.graph import Graph

__all__ = ["PatchCNN", "build_patch_cnn", "window_extent"]


def window_extent(input_size: int, kernel_sizes: list[int] | tuple[int, ...]) -> tuple[int, int]:
    """``(fc_kernel, field)``: the map size left for the first FC layer and the pixels it sees.

    ``field`` equals ``input_size`` unless a pooling drops a trailing odd row.

    Raises:
        SpecError: the window shrinks to nothing before the fully connected layers.
    """
    size, field, jump = input_size, 1, 1
    for k in kernel_sizes:
        size -= k - 1
        if size < 2:
            raise SpecError(
                f"model.input_size {input_size} is too small for model.kernel_sizes "
                f"{list(kernel_sizes)}: a convolution of size {k} leaves {size} pixel(s) to pool; "
                "use a larger input_size or fewer/smaller kernels"
            )
        size //= 2
        field += (k - 1) * jump + jump  # convolution, then the 2×2 pooling
        jump *= 2
    field += (size - 1) * jump
    return size, field


class PatchCNN(SegmentationNetwork):
    """The Ciresan window classifier, windowed (stride 16) or dense (stride 1, rarefied).

    Shapes: window mode ``(B, C, *n)`` → ``(B, classes, *(⌊(n − 95)/16⌋ + 1))`` for the defaults;
    dense mode ``(B, C, *n)`` → ``(B, classes, *n)`` (``same``) or ``*(n − 94)`` (``valid``).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        num_classes: int,
        *,
        filters: int = 48,
        input_size: int = 95,
        kernel_sizes: list[int] | tuple[int, ...] = (4, 5, 4, 4),
        hidden: int = 200,
        mode: str = "dense",
        padding: str = "same",
        padding_mode: str = "zeros",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.mode, self.kernel_sizes = mode, tuple(kernel_sizes)
        fc_kernel, self.window = window_extent(input_size, kernel_sizes)
        dense = mode == "dense"
        before = (self.window - 1) // 2 if dense and padding == "same" else 0
        after = self.window - 1 - before if dense and padding == "same" else 0
        self.pad = layers.Pad(dims, before, after, mode=padding_mode)
        self.padding_mode = padding_mode
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.pools = nn.ModuleList()
        channels, jump = in_channels, 1
        for k in kernel_sizes:
            self.convs.append(
                layers.conv(dims, channels, filters, k, dilation=jump if dense else 1)
            )
            self.acts.append(layers.activation(activation))
            self.pools.append(
                layers.pool(dims, 2, stride=1, dilation=jump) if dense else layers.pool(dims, 2)
            )
            channels = filters
            jump *= 2
        self.fc_kernel = fc_kernel
        self.fc1 = layers.conv(dims, channels, hidden, fc_kernel, dilation=jump if dense else 1)
        self.fc1_act = layers.activation(activation)
        self.fc2 = layers.conv(dims, hidden, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        for conv, act, pool in zip(self.convs, self.acts, self.pools, strict=True):
            x = pool(act(conv(x)))
        return self.fc2(self.fc1_act(self.fc1(x)))

    def field_graph(self) -> Graph:
        g = Graph(self.dims, self.in_channels)
        dense = self.mode == "dense"
        x = g.input
        if self.pad.before or self.pad.after:
            x = g.pad(
                x, "pad", self.pad.before, self.pad.after, reflect=self.padding_mode == "reflect"
            )
        jump = 1
        for i, (conv, act, k) in enumerate(
            zip(self.convs, self.acts, self.kernel_sizes, strict=True)
        ):
            d = jump if dense else 1
            x = g.conv(
                x,
                f"conv{i + 1}",
                channels=conv.out_channels,
                kernel=k,
                dilation=d,
                params=layers.count_parameters(conv, act),
                type="convolutional" + (f" (dilation {d})" if d > 1 else ""),
            )
            if dense:
                x = g.pool(
                    x,
                    f"pool{i + 1}",
                    kernel=2,
                    stride=1,
                    dilation=d,
                    type="max pooling" + (f" (dilation {d})" if d > 1 else ""),
                )
            else:
                x = g.pool(x, f"pool{i + 1}", kernel=2, type="max pooling")
            jump *= 2
        d = jump if dense else 1
        x = g.conv(
            x,
            "fc1",
            channels=self.fc1.out_channels,
            kernel=self.fc_kernel,
            dilation=d,
            params=layers.count_parameters(self.fc1, self.fc1_act),
            type="fully connected" + (f" (dilation {d})" if dense else ""),
        )
        g.set_output(
            g.conv(
                x,
                "fc2",
                channels=self.num_classes,
                kernel=1,
                params=layers.count_parameters(self.fc2),
                type="fully connected",
            )
        )
        return g


@ARCHITECTURES.register("patch_cnn")
def build_patch_cnn(spec: PatchCNNSpec) -> PatchCNN:
    """Build a :class:`PatchCNN` from its spec."""
    return PatchCNN(
        spec.dims,
        spec.in_channels,
        spec.num_classes,
        filters=spec.filters,
        input_size=spec.input_size,
        kernel_sizes=spec.kernel_sizes,
        hidden=spec.hidden,
        mode=spec.mode,
        padding=spec.padding,
        padding_mode=spec.pad_mode,
        activation=spec.activation,
    )
