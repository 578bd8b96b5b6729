"""Fully convolutional network (Long, Shelhamer & Darrell, CVPR 2015): FCN-32s, -16s and -8s.

    >>> import torch
    >>> from segcli.config.schema import FCNSpec
    >>> from segcli.models import build
    >>> net = build(FCNSpec(filters=8, variant="8s"))
    >>> net(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 2, 64, 64])

A VGG-style encoder: stages of 3×3 convolutions (``convs_per_stage``, width ``filters·2**s``
capped by ``max_filters``), each followed by 2×2 max-pooling; then the "convolutionalised"
fully connected layers fc6 (``fc_kernel``) and fc7 (1×1) and a 1×1 class-score layer at stride
``2**stages``.  FCN-32s upsamples these coarse scores straight to the input size.  FCN-16s
first upsamples them ×2 (a learned transposed convolution initialised to bilinear
interpolation) and adds 1×1 scores of the second-to-last pooling output; FCN-8s repeats this
with the third-to-last.  The final upsampling is fixed bilinear/trilinear interpolation (the
paper fixes those filters to bilinear too).  Input sizes must be multiples of ``2**stages``.
"""

from __future__ import annotations

import torch
from torch import nn

from segcli.config.schema import FCNSpec
from segcli.errors import SpecError
from segcli.models import layers
from segcli.models.base import ARCHITECTURES, SegmentationNetwork
from segcli.models.graph import Graph

__all__ = ["FCN", "bilinear_kernel", "build_fcn"]

_SKIPS = {"32s": 0, "16s": 1, "8s": 2}


def bilinear_kernel(dims: int, size: int) -> torch.Tensor:
    """Separable (bi/tri)linear interpolation kernel of edge ``size`` (FCN's upsampling init)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    kernel = ramp
    for _ in range(dims - 1):
        kernel = kernel[..., None] * ramp
    return kernel


class FCN(SegmentationNetwork):
    """FCN-32s/16s/8s; see the module docstring.

    Shapes: ``(B, C, *spatial)`` → ``(B, num_classes, *spatial)``; every spatial size must be
    divisible by ``2**len(convs_per_stage)``.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        num_classes: int,
        *,
        filters: int = 16,
        variant: str = "8s",
        convs_per_stage: list[int] | tuple[int, ...] = (2, 2, 3, 3, 3),
        max_filters: int = 512,
        norm: str = "none",
        fc_filters: int | None = None,
        fc_kernel: int = 3,
    ) -> None:
        super().__init__()
        stages = len(convs_per_stage)
        skips = _SKIPS[variant]
        if stages < skips + 1:
            raise SpecError(
                f"model.variant '{variant}' fuses scores from {skips + 1} pooling stages but "
                f"model.convs_per_stage has {stages}; add stages or use variant "
                f"{'32s' if stages < 2 else '16s'}"
            )
        if fc_kernel % 2 == 0:
            raise SpecError(f"model.fc_kernel must be odd (same padding), got {fc_kernel}")
        self.dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.variant, self.stages, self.skips = variant, stages, skips
        self.convs_per_stage, self.fc_kernel = tuple(convs_per_stage), fc_kernel
        self.stage_blocks = nn.ModuleList()
        channels = in_channels
        widths = []
        for s, n in enumerate(convs_per_stage):
            width = min(filters * 2**s, max_filters)
            convs = []
            for _ in range(n):
                convs.append(
                    nn.Sequential(
                        layers.conv(dims, channels, width, 3, padding="same"),
                        layers.norm(norm, dims, width),
                        layers.activation("relu"),
                    )
                )
                channels = width
            self.stage_blocks.append(nn.ModuleList(convs))
            widths.append(width)
        self.pool = layers.pool(dims, 2)
        fc = fc_filters or channels
        self.fc6 = nn.Sequential(
            layers.conv(dims, channels, fc, fc_kernel, padding="same"), layers.activation("relu")
        )
        self.fc7 = nn.Sequential(layers.conv(dims, fc, fc, 1), layers.activation("relu"))
        self.score = layers.conv(dims, fc, num_classes, 1)
        # scores of the pooling outputs of stages stages-2, stages-3 (deepest first)
        self.skip_scores = nn.ModuleList(
            layers.conv(dims, widths[stages - 2 - i], num_classes, 1) for i in range(skips)
        )
        self.ups = nn.ModuleList(
            layers.conv_transpose(dims, num_classes, num_classes, 4, stride=2, padding=1)
            for _ in range(skips)
        )
        for up in self.ups:
            if not up.weight.is_meta:
                with torch.no_grad():
                    up.weight.zero_()
                    for c in range(num_classes):
                        up.weight[c, c] = bilinear_kernel(dims, 4)
                    up.bias.zero_()
        self.final_scale = 2 ** (stages - skips)
        self.final_up = layers.Interpolate(dims, self.final_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for convs in self.stage_blocks:
            for conv in convs:
                x = conv(x)
            x = self.pool(x)
            pooled.append(x)
        y = self.score(self.fc7(self.fc6(x)))
        for i, (up, score) in enumerate(zip(self.ups, self.skip_scores, strict=True)):
            y = up(y) + score(pooled[self.stages - 2 - i])
        return self.final_up(y)

    def field_graph(self) -> Graph:
        g = Graph(self.dims, self.in_channels)
        x = g.input
        pooled = []
        for s, convs in enumerate(self.stage_blocks):
            for i, conv in enumerate(convs):
                x = g.conv(
                    x,
                    f"stage{s + 1}.conv{i + 1}",
                    channels=conv[0].out_channels,
                    kernel=3,
                    pad="same",
                    params=layers.count_parameters(conv),
                )
            x = g.pool(x, f"stage{s + 1}.pool", kernel=2, exact=True)
            pooled.append(x)
        x = g.conv(
            x,
            "fc6",
            channels=self.fc6[0].out_channels,
            kernel=self.fc_kernel,
            pad="same",
            params=layers.count_parameters(self.fc6),
        )
        x = g.conv(
            x,
            "fc7",
            channels=self.fc7[0].out_channels,
            kernel=1,
            params=layers.count_parameters(self.fc7),
        )
        y = g.conv(
            x,
            "score",
            channels=self.num_classes,
            kernel=1,
            params=layers.count_parameters(self.score),
        )
        for i, (up, score) in enumerate(zip(self.ups, self.skip_scores, strict=True)):
            stage = self.stages - 1 - i
            y = g.transpose(
                y,
                f"upscore{i + 1}",
                channels=self.num_classes,
                kernel=4,
                stride=2,
                padding=1,
                params=layers.count_parameters(up),
            )
            s = g.conv(
                pooled[stage - 1],
                f"score_pool{stage}",
                channels=self.num_classes,
                kernel=1,
                params=layers.count_parameters(score),
            )
            y = g.merge([y, s], f"fuse{i + 1}", kind="add")
        g.set_output(g.interp(y, "upsample", scale=self.final_scale))
        return g


@ARCHITECTURES.register("fcn")
def build_fcn(spec: FCNSpec) -> FCN:
    """Build an :class:`FCN` from its spec."""
    return FCN(
        spec.dims,
        spec.in_channels,
        spec.num_classes,
        filters=spec.filters,
        variant=spec.variant,
        convs_per_stage=spec.convs_per_stage,
        max_filters=spec.max_filters,
        norm=spec.norm,
        fc_filters=spec.fc_filters,
        fc_kernel=spec.fc_kernel,
    )
