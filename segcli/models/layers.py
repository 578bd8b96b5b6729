"""Dimension-generic layer factories: one call site for 2D and 3D networks.

    >>> from segcli.models import layers
    >>> conv = layers.conv(3, 1, 8, kernel_size=3, padding="same")   # nn.Conv3d
    >>> block = [conv, layers.norm("instance", 3, 8), layers.activation("leaky_relu")]
    >>> layers.pool(2, kernel_size=2)                                 # nn.MaxPool2d
    MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)

Every factory takes ``dims`` (2 or 3) first; the spec's closed choices (``norm``,
``activation``, ``pad_mode``) map to modules here and nowhere else.  The model spec's
``pad_mode`` (what a convolution pads with) is called ``padding_mode`` in the code, torch's
name, so that ``pad_mode`` in code always means how an *image* is padded to a window
(``inference.pad_mode``, :mod:`segcli.padding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CenterCrop",
    "DilatedAvgPool",
    "Interpolate",
    "Pad",
    "activation",
    "center_crop",
    "conv",
    "conv_transpose",
    "count_parameters",
    "norm",
    "pool",
]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_BATCH = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


#: one value for every spatial axis, or one per axis (array axis order)
Size = int | Sequence[int]


def _check_dims(dims: int) -> None:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")


def _tuple(value: Size, dims: int) -> tuple[int, ...]:
    """``value`` as one int per axis (``ValueError`` when a sequence has the wrong length)."""
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(int(v) for v in value)
    if len(values) != dims:
        raise ValueError(
            f"{list(values)} has {len(values)} entries, expected one per axis ({dims})"
        )
    return values


def _compact(value: Size, dims: int) -> int | tuple[int, ...]:
    """An int when ``value`` is the same on every axis (keeps module reprs as before)."""
    values = _tuple(value, dims)
    return values[0] if len(set(values)) == 1 else values


def conv(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Size,
    *,
    stride: Size = 1,
    dilation: Size = 1,
    padding: Size | str = 0,
    padding_mode: str = "zeros",
    bias: bool = True,
) -> nn.Module:
    """``nn.Conv2d`` / ``nn.Conv3d``; ``padding`` is an int per side, ``"same"`` or ``"valid"``.

    ``kernel_size``, ``stride``, ``dilation`` and an integer ``padding`` are one int for every
    axis or one per axis (e.g. ``(1, 3, 3)`` for a kernel that does not mix slices).
    ``"same"`` (stride 1 only) pads ``d·(k−1)`` in total per axis, ``⌊total/2⌋`` before —
    PyTorch's own rule, which the receptive-field graph mirrors.
    """
    _check_dims(dims)
    return _CONV[dims](
        in_channels,
        out_channels,
        _compact(kernel_size, dims),
        stride=_compact(stride, dims),
        dilation=_compact(dilation, dims),
        padding=padding if isinstance(padding, str) else _compact(padding, dims),
        padding_mode=padding_mode,
        bias=bias,
    )


def conv_transpose(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Size,
    *,
    stride: Size,
    padding: Size = 0,
) -> nn.Module:
    """``nn.ConvTranspose2d`` / ``3d``: output size ``(n − 1)·stride − 2·padding + kernel``.

    Each argument is one int for every axis or one per axis.
    """
    _check_dims(dims)
    return _CONV_T[dims](
        in_channels,
        out_channels,
        _compact(kernel_size, dims),
        stride=_compact(stride, dims),
        padding=_compact(padding, dims),
    )


def pool(
    dims: int,
    kernel_size: Size,
    *,
    stride: Size | None = None,
    dilation: Size = 1,
    kind: str = "max",
) -> nn.Module:
    """Max (default) or average pooling; ``stride`` defaults to ``kernel_size``.

    Each argument is one int for every axis or one per axis (``(1, 2, 2)`` pools in-plane only).
    """
    _check_dims(dims)
    kernel = _compact(kernel_size, dims)
    stride = kernel if stride is None else _compact(stride, dims)
    dilation = _compact(dilation, dims)
    if kind == "max":
        return _MAXPOOL[dims](kernel, stride=stride, dilation=dilation)
    if kind == "avg":
        if dilation != 1:
            return DilatedAvgPool(dims, kernel, stride=stride, dilation=dilation)
        return _AVGPOOL[dims](kernel, stride=stride)
    raise ValueError(f"pool kind must be 'max' or 'avg', got {kind!r}")


def _groups(channels: int, at_most: int = 8) -> int:
    """The largest group count ≤ ``at_most`` that divides ``channels``."""
    return max(g for g in range(1, min(at_most, channels) + 1) if channels % g == 0)


def norm(kind: str, dims: int, channels: int) -> nn.Module:
    """``batch`` | ``instance`` (affine) | ``group`` (≤ 8 groups dividing C) | ``none``."""
    _check_dims(dims)
    if kind == "batch":
        return _BATCH[dims](channels)
    if kind == "instance":
        return _INSTANCE[dims](channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(_groups(channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be batch, instance, group or none, got {kind!r}")


def activation(name: str) -> nn.Module:
    """``relu`` | ``leaky_relu`` (slope 0.01) | ``gelu`` | ``elu`` | ``prelu`` (one slope)."""
    factories = {
        "relu": lambda: nn.ReLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "gelu": nn.GELU,
        "elu": lambda: nn.ELU(inplace=True),
        "prelu": nn.PReLU,
    }
    try:
        return factories[name]()
    except KeyError:
        raise ValueError(
            f"activation must be one of {', '.join(factories)}, got {name!r}"
        ) from None


def count_parameters(*modules: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``modules``, shared ones counted once."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the trailing ``len(size)`` axes of ``x`` centrally to ``size``.

    The offset per axis is ``(n − target) // 2`` (the U-Net skip-connection crop).

    Raises:
        ValueError: a target is larger than the tensor.
    """
    spatial = x.shape[-len(size) :]
    if any(t > n for t, n in zip(size, spatial, strict=True)):
        raise ValueError(f"cannot crop spatial size {tuple(spatial)} to {tuple(size)}")
    slices = [slice((n - t) // 2, (n - t) // 2 + t) for n, t in zip(spatial, size, strict=True)]
    return x[(..., *slices)]


class CenterCrop(nn.Module):
    """Module form of :func:`center_crop` cropping ``x`` to the spatial size of ``ref``."""

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return center_crop(x, ref.shape[2:])


class Pad(nn.Module):
    """Pad every spatial axis by ``(before, after)`` with zeros, reflection or replication.

    Args:
        dims: 2 or 3.
        before, after: voxels added on each side of every spatial axis.
        mode: ``zeros`` | ``reflect`` | ``replicate`` (the spec's ``pad_mode``).
    """

    def __init__(self, dims: int, before: int, after: int, mode: str = "zeros") -> None:
        super().__init__()
        _check_dims(dims)
        if mode not in _PAD_MODES:
            raise ValueError(f"pad mode must be one of {', '.join(_PAD_MODES)}, got {mode!r}")
        self.dims, self.before, self.after, self.mode = dims, before, after, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before == 0 and self.after == 0:
            return x
        return F.pad(x, (self.before, self.after) * self.dims, mode=_PAD_MODES[self.mode])

    def extra_repr(self) -> str:
        return f"before={self.before}, after={self.after}, mode={self.mode}"


class Interpolate(nn.Module):
    """Upsample by an integer ``scale`` (``nearest`` or (bi/tri)``linear``, align_corners=False).

    ``scale`` is one factor for every axis or one per axis (``(1, 2, 2)``: in-plane only).
    """

    def __init__(self, dims: int, scale: Size, mode: str = "linear") -> None:
        super().__init__()
        _check_dims(dims)
        if mode not in ("nearest", "linear"):
            raise ValueError(f"interpolation mode must be nearest or linear, got {mode!r}")
        self.dims, self.scale, self.mode = dims, _compact(scale, dims), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode if self.mode == "nearest" else ("bilinear", "trilinear")[self.dims - 2]
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        scale = self.scale if isinstance(self.scale, int) else tuple(float(s) for s in self.scale)
        return F.interpolate(x, scale_factor=scale, mode=mode, **kwargs)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}"


class DilatedAvgPool(nn.Module):
    """Average pooling with dilation (PyTorch's AvgPool has none): a constant depthwise conv."""

    def __init__(
        self, dims: int, kernel_size: Size, *, stride: Size = 1, dilation: Size = 1
    ) -> None:
        super().__init__()
        _check_dims(dims)
        self.dims, self.kernel_size, self.stride, self.dilation = (
            dims,
            _tuple(kernel_size, dims),
            _tuple(stride, dims),
            _tuple(dilation, dims),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        weight = x.new_full((1, 1, *self.kernel_size), 1.0)
        weight = weight / math.prod(weight.shape)
        op = F.conv2d if self.dims == 2 else F.conv3d
        y = op(
            x.reshape(batch * channels, 1, *spatial),
            weight,
            stride=self.stride,
            dilation=self.dilation,
        )
        return y.reshape(batch, channels, *y.shape[2:])
