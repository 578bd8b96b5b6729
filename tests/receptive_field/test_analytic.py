"""Analytic receptive fields: the lecture's figures, the closed formula, and the per-axis index
maps of every graph operation checked against PyTorch's own gradients."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segcli.config import load
from segcli.config.schema import PatchCNNSpec, UNetSpec
from segcli.models import build, count_parameters, field_graph
from segcli.receptive_field import Graph, analyse

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def test_lecture_toy_cnn_sees_7_and_dilated_15_with_equal_parameters() -> None:
    cnn = load(EXPERIMENTS / "toy-cnn.yaml").model
    dilated = load(EXPERIMENTS / "toy-dilated.yaml").model
    a = analyse(field_graph(cnn), (32, 32))
    b = analyse(field_graph(dilated), (32, 32))
    assert a.receptive_field == (7, 7)
    assert b.receptive_field == (15, 15)
    assert a.parameters == b.parameters == count_parameters(build(cnn))
    assert [row.receptive_field[0] for row in b.layers] == [1, 3, 7, 15, 15]


def test_lecture_patch_cnn_table() -> None:
    report = analyse(field_graph(PatchCNNSpec(mode="window")), (95, 95))
    sizes = [row.output_size[0] for row in report.layers]
    assert sizes == [95, 92, 46, 42, 21, 18, 9, 6, 3, 1, 1]
    assert [row.channels for row in report.layers] == [1] + [48] * 8 + [200, 2]
    assert [row.maps_and_neurons for row in report.layers][-3:] == [
        "48 maps of 3x3 neurons",
        "200 neurons",
        "2 neurons",
    ]
    # r_out = r_in + (k − 1)·jump: 4, 5, 13, 15, 27, 31, 55, 63, then the 3×3 FC sees 95
    fields = [row.receptive_field[0] for row in report.layers]
    assert fields == [1, 4, 5, 13, 15, 27, 31, 55, 63, 95, 95]
    assert [row.jump[0] for row in report.layers] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 16]


def test_unet_2015_field_and_sizes() -> None:
    spec = load(EXPERIMENTS / "unet-2015.yaml").model
    report = analyse(field_graph(spec), (572, 572))
    assert report.output_size == (388, 388)
    assert report.parameters == 31_030_658
    # the decoder returns to jump 1; the field is the largest over the 16 positions of the grid
    assert report.jump == (1, 1)
    assert report.receptive_field == (204, 204)
    encoder = [row for row in report.layers if row.name.endswith("pool")]
    assert [row.jump[0] for row in encoder] == [2, 4, 8, 16]


def test_field_depends_on_position_after_upsampling() -> None:
    graph = field_graph(UNetSpec(filters=2, depth=2, norm="none"))
    sizes = graph.sizes((32, 32))
    node = next(n for n in graph.nodes if n.name == "up0.conv1")
    extents = {
        hi - lo + 1
        for lo, hi in (graph.field(node, p, p, sizes, 0) for p in range(graph.period(node)))
    }
    assert len(extents) > 1  # units on and between the coarse grid points see different fields
    report = analyse(graph, (32, 32))
    row = next(r for r in report.layers if r.name == "up0.conv1")
    assert row.receptive_field[0] == max(extents)


# ------------------------------------------------------------------ the closed formula


layer_strategy = st.tuples(
    st.sampled_from(["conv", "pool"]),
    st.integers(1, 5),  # kernel
    st.integers(1, 3),  # stride
    st.integers(1, 3),  # dilation
)


@settings(max_examples=60, deadline=None)
@given(st.lists(layer_strategy, min_size=1, max_size=5))
def test_chains_follow_the_closed_formula(chain: list[tuple[str, int, int, int]]) -> None:
    graph = Graph(dims=2, in_channels=1)
    x = graph.input
    field, jump = 1, 1
    expected = [(1, 1)]
    for i, (kind, k, s, d) in enumerate(chain):
        if kind == "conv":
            x = graph.conv(x, f"l{i}", channels=2, kernel=k, stride=s, dilation=d, pad="valid")
        else:
            x = graph.pool(x, f"l{i}", kernel=k, stride=s, dilation=d)
        field += (d * (k - 1) + 1 - 1) * jump  # r_out = r_in + (k_eff − 1)·jump_in
        jump *= s
        expected.append((field, jump))
    graph.set_output(x)
    size = 2 + sum(d * (k - 1) + 1 for _, k, _, d in chain) * 30  # large enough for any chain
    report = analyse(graph, (size, size + 1))
    assert [(r.receptive_field[0], r.jump[0]) for r in report.layers] == expected
    assert report.receptive_field == (field, field)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(layer_strategy, layer_strategy), min_size=1, max_size=4))
def test_per_axis_chains_follow_the_closed_formula_on_each_axis(
    chain: list[tuple[tuple[str, int, int, int], tuple[str, int, int, int]]],
) -> None:
    # one graph with different kernel, stride and dilation per axis; each axis on its own
    # must follow r_out = r_in + (k_eff − 1)·jump_in (the operation kind comes from axis 0)
    graph = Graph(dims=2, in_channels=1)
    x = graph.input
    fields, jumps = [1, 1], [1, 1]
    for i, layers in enumerate(chain):
        kind = layers[0][0]
        k, s, d = ([layer[j] for layer in layers] for j in (1, 2, 3))
        if kind == "conv":
            x = graph.conv(x, f"l{i}", channels=2, kernel=k, stride=s, dilation=d, pad="same")
        else:
            x = graph.pool(x, f"l{i}", kernel=k, stride=s, dilation=d)
        for axis in range(2):
            fields[axis] += d[axis] * (k[axis] - 1) * jumps[axis]
            jumps[axis] *= s[axis]
    graph.set_output(x)
    size = 2 + sum(max(d * (k - 1) + 1 for _, k, _, d in layers) for layers in chain) * 30
    report = analyse(graph, (size, size + 1))
    assert report.receptive_field == tuple(fields)
    assert report.jump == tuple(Fraction(j) for j in jumps)


def test_anisotropic_unet_rows_are_per_axis() -> None:
    spec = UNetSpec(dims=3, filters=2, strides=[[1, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])  # fmt: skip
    report = analyse(field_graph(spec), (8, 16, 16))
    rows = {row.name: row for row in report.layers}
    assert rows["enc0.conv1"].kernel == (1, 3, 3) and rows["down1.conv1"].kernel == 3
    assert rows["down1.pool"].kernel == (1, 2, 2)
    assert rows["down1.pool"].jump == (1, 2, 2) and rows["down2.pool"].jump == (2, 4, 4)
    assert rows["up0.upconv"].kernel == (1, 2, 2) and rows["up0.upconv"].jump == (1, 1, 1)
    assert rows["up0.conv1"].kernel == (1, 3, 3)  # the decoder reuses its stage's kernel
    assert rows["down1.pool"].output_size == (8, 8, 8)
    # z: two 1-wide convs (1), a stride-1 pool (1), two 3-wide convs (5); y, x: 5, 6, 14
    assert rows["enc0.conv2"].receptive_field == (1, 5, 5)
    assert rows["down1.conv2"].receptive_field == (5, 14, 14)
    assert report.to_dict()["layers"][1]["kernel"] == [1, 3, 3]
    assert report.parameters == count_parameters(build(spec))


# ------------------------------------------------------------------ index maps vs PyTorch


def _support(module: nn.Module, n: int, position: int) -> tuple[int, int]:
    """First and last input index (1D) whose gradient reaches output ``position``."""
    x = torch.ones(1, 1, n, dtype=torch.float64, requires_grad=True)
    module(x)[0, 0, position].backward()
    idx = torch.nonzero(x.grad[0, 0] != 0).flatten()
    return int(idx.min()), int(idx.max())


OPS = [
    ("conv", dict(kernel=3, stride=1, dilation=1, pad=(1, 1))),
    ("conv", dict(kernel=4, stride=2, dilation=1, pad=(1, 2))),
    ("conv", dict(kernel=3, stride=3, dilation=2, pad=(0, 0))),
    ("transpose", dict(kernel=2, stride=2, padding=0)),
    ("transpose", dict(kernel=4, stride=2, padding=1)),
    ("transpose", dict(kernel=3, stride=2, padding=1)),
    ("transpose", dict(kernel=5, stride=3, padding=2)),
    ("nearest", dict(scale=2)),
    ("nearest", dict(scale=3)),
    ("linear", dict(scale=2)),
    ("linear", dict(scale=3)),
    ("linear", dict(scale=4)),
]


def _torch_op(kind: str, opts: dict) -> nn.Module:
    if kind == "conv":
        before, after = opts["pad"]
        conv = nn.Conv1d(1, 1, opts["kernel"], stride=opts["stride"], dilation=opts["dilation"])
        nn.init.constant_(conv.weight, 1.0)
        return nn.Sequential(nn.ConstantPad1d((before, after), 1.0), conv)
    if kind == "transpose":
        up = nn.ConvTranspose1d(
            1, 1, opts["kernel"], stride=opts["stride"], padding=opts["padding"]
        )
        nn.init.constant_(up.weight, 1.0)
        return up
    mode = kind if kind == "nearest" else "linear"
    kwargs = {} if kind == "nearest" else {"align_corners": False}
    return nn.Upsample(scale_factor=opts["scale"], mode=mode, **kwargs)


@pytest.mark.parametrize(("kind", "opts"), OPS, ids=lambda v: str(v))
def test_index_maps_match_pytorch_gradients(kind: str, opts: dict) -> None:
    graph = Graph(dims=1, in_channels=1)
    if kind == "conv":
        node = graph.conv(graph.input, "op", channels=1, **opts)
    elif kind == "transpose":
        node = graph.transpose(graph.input, "op", channels=1, **opts)
    else:
        node = graph.interp(graph.input, "op", mode=kind, **opts)
    graph.set_output(node)
    n = 20
    sizes = graph.sizes((n,))
    module = _torch_op(kind, opts).double()
    out = module(torch.zeros(1, 1, n, dtype=torch.float64))
    assert out.shape[-1] == sizes[node.index][0]
    for position in range(out.shape[-1]):
        lo, hi = graph.field(node, position, position, sizes, 0)
        if kind != "conv" and (lo < 0 or hi >= n):
            continue  # the unbounded grid differs from PyTorch's clamping at the border
        torch_lo, torch_hi = _support(module, n, position)
        if kind == "conv":  # padded taps are outside the image: compare the clipped interval
            lo, hi = max(lo, 0), min(hi, n - 1)
        assert (lo, hi) == (torch_lo, torch_hi), position


def test_jump_is_a_fraction_after_upsampling_past_the_input_resolution() -> None:
    graph = Graph(dims=2, in_channels=1)
    up = graph.interp(graph.input, "up", scale=2, mode="nearest")
    graph.set_output(graph.conv(up, "conv", channels=1, kernel=4, pad="same"))
    report = analyse(graph, (8, 8))
    assert report.jump == (Fraction(1, 2), Fraction(1, 2))
    assert report.to_dict()["jump"] == [0.5, 0.5]
    # the formula gives 1 + 3·½ = 2.5: 4 fine positions span 2 or 3 input pixels, the max is 3
    assert report.receptive_field == (3, 3)
