"""Dimension-generic layer factories against direct PyTorch computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segcli.models import layers


@pytest.mark.parametrize("dims", [2, 3])
def test_factories_pick_the_dimension(dims: int) -> None:
    assert isinstance(layers.conv(dims, 1, 2, 3), (nn.Conv2d, nn.Conv3d)[dims - 2])
    assert isinstance(layers.pool(dims, 2), (nn.MaxPool2d, nn.MaxPool3d)[dims - 2])
    assert isinstance(layers.pool(dims, 2, kind="avg"), (nn.AvgPool2d, nn.AvgPool3d)[dims - 2])
    up = layers.conv_transpose(dims, 4, 2, 2, stride=2)
    assert up(torch.zeros((1, 4) + (3,) * dims)).shape == (1, 2) + (6,) * dims
    assert isinstance(layers.norm("batch", dims, 4), (nn.BatchNorm2d, nn.BatchNorm3d)[dims - 2])
    inorm = layers.norm("instance", dims, 4)
    assert inorm.affine and sum(p.numel() for p in inorm.parameters()) == 8


def test_group_norm_uses_the_largest_divisor_up_to_eight() -> None:
    assert layers.norm("group", 2, 12).num_groups == 6
    assert layers.norm("group", 2, 16).num_groups == 8
    assert layers.norm("group", 2, 7).num_groups == 7
    assert layers.norm("group", 2, 1).num_groups == 1


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "gelu", "elu", "prelu"])
def test_activations_are_nonlinear(name: str) -> None:
    act = layers.activation(name)
    x = torch.linspace(-2, 2, 9)
    y = act(x.clone())
    assert torch.allclose(y[x > 0.5], x[x > 0.5], atol=0.2)  # ~identity for positive inputs
    assert not torch.allclose(y, x)


def test_bad_choices_name_the_choice() -> None:
    with pytest.raises(ValueError, match="norm must be"):
        layers.norm("layer", 2, 4)
    with pytest.raises(ValueError, match="activation must be one of"):
        layers.activation("swish")
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        layers.conv(1, 1, 1, 3)
    with pytest.raises(ValueError, match="pool kind"):
        layers.pool(2, 2, kind="min")


def test_center_crop_takes_the_middle() -> None:
    x = torch.arange(7 * 6).reshape(1, 1, 7, 6)
    y = layers.center_crop(x, (3, 2))
    assert torch.equal(y, x[..., 2:5, 2:4])
    with pytest.raises(ValueError, match="cannot crop"):
        layers.center_crop(x, (8, 2))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
def test_pad_matches_functional_pad(mode: str) -> None:
    x = torch.randn(1, 2, 5, 6, 7)
    torch_mode = {"zeros": "constant"}.get(mode, mode)
    expected = F.pad(x, (1, 3, 1, 3, 1, 3), mode=torch_mode)
    assert torch.equal(layers.Pad(3, 1, 3, mode)(x), expected)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 3),
    size=st.integers(8, 14),
)
def test_dilated_average_pool_equals_the_mean_of_dilated_taps(
    k: int, stride: int, dilation: int, size: int
) -> None:
    x = torch.randn(2, 3, size, size + 1, dtype=torch.float64)
    y = layers.DilatedAvgPool(2, k, stride=stride, dilation=dilation)(x)
    # reference: mean over the k×k dilated taps, written as explicit slicing
    reach = dilation * (k - 1) + 1
    out_h = (size - reach) // stride + 1
    out_w = (size + 1 - reach) // stride + 1
    ref = torch.zeros(2, 3, out_h, out_w, dtype=torch.float64)
    for a in range(k):
        for b in range(k):
            ref += x[..., a * dilation :, b * dilation :][
                ..., : out_h * stride : stride, : out_w * stride : stride
            ]
    torch.testing.assert_close(y, ref / k**2)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_interpolate_scales_by_an_integer(mode: str) -> None:
    x = torch.randn(1, 1, 3, 4, 5)
    y = layers.Interpolate(3, 2, mode)(x)
    assert y.shape == (1, 1, 6, 8, 10)
    if mode == "nearest":
        assert torch.equal(y[..., ::2, ::2, ::2], x)


def test_count_parameters_counts_shared_modules_once() -> None:
    conv = layers.conv(2, 2, 3, 3)
    assert layers.count_parameters(conv, conv) == 2 * 3 * 9 + 3
