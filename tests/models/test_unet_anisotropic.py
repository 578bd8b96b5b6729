"""U-Nets with per-stage, per-axis pooling strides and kernel sizes (``model.strides`` /
``model.kernel_sizes``, nnU-Net's ``pool_op_kernel_sizes`` / ``conv_kernel_sizes``): shapes,
parameter counts by hand, the graph mirror, deep-supervision targets, and that leaving both
keys out reproduces the isotropic network exactly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.config import from_dict
from segcli.config.schema import UNetSpec
from segcli.errors import SpecError
from segcli.models import build, check_input_size, count_parameters, output_size, size_multiple
from segcli.models.unet import UNet

STRIDES_3D = [[1, 2, 2], [2, 2, 2]]
KERNELS_3D = [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
STRIDES_2D = [[1, 2], [2, 2]]
KERNELS_2D = [[1, 3], [3, 3], [3, 1]]


def aniso(dims: int, **options: Any) -> UNetSpec:
    strides, kernels = (STRIDES_3D, KERNELS_3D) if dims == 3 else (STRIDES_2D, KERNELS_2D)
    base = {"filters": 2, "in_channels": 2, "classes": 3, "norm": "none"}
    return UNetSpec(dims=dims, strides=strides, kernel_sizes=kernels, **{**base, **options})


def first_valid(spec: UNetSpec, at_least: int = 1) -> tuple[int, ...]:
    """Per axis, the smallest input length ≥ ``at_least`` the network accepts."""
    graph = build(spec).field_graph()
    return tuple(
        next(n for n in range(at_least, at_least + 400) if graph.fits(n, axis))
        for axis in range(spec.dims)
    )


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("upsample", ["transpose", "interp"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_forward_shapes(
    dims: int, padding: str, upsample: str, residual: bool, deep_supervision: bool
) -> None:
    spec = aniso(
        dims,
        padding=padding,
        upsample=upsample,
        residual=residual,
        deep_supervision=deep_supervision,
    )
    assert spec.depth == 2  # inferred from the two stride entries
    net = build(spec)
    if padding == "same":
        size = (4, 12, 8)[:dims] if dims == 3 else (4, 8)  # multiples of the total stride
        assert size_multiple(spec) == ((2, 4, 4) if dims == 3 else (2, 4))
    else:
        size = first_valid(spec, 10)
    expected = output_size(spec, size)
    if padding == "same":
        assert expected == size
    out = net.train()(torch.randn(1, 2, *size))
    outputs = out if isinstance(out, list) else [out]
    assert isinstance(out, list) == deep_supervision
    assert tuple(outputs[0].shape) == (1, 3, *expected)
    if deep_supervision and padding == "same":
        # the auxiliary output is coarser by the first stage's per-axis stride
        stride = spec.strides[0]  # type: ignore[index]
        assert tuple(outputs[1].shape[2:]) == tuple(
            n // s for n, s in zip(size, stride, strict=True)
        )
    net.eval()
    with torch.no_grad():
        assert tuple(net(torch.randn(1, 2, *size)).shape) == (1, 3, *expected)


def test_valid_padding_shapes_by_hand() -> None:
    # one valid conv per block; kernels (1,3,3) (3,3,3) (3,3,3); strides (1,2,2) (2,2,2)
    # z: 10 →k1 10 →pool1 10 →k3 8 →pool2 4 →k3 2 →up2 4 (skip 8 cropped) →k3 2
    #    →up1 2 (skip 10 cropped) →k1 2
    # y, x: 22 →k3 20 →pool2 10 →k3 8 →pool2 4 →k3 2 →up2 4 →k3 2 →up2 4 →k3 2
    # z = 6: 6 → 6 → 6 → 4 → 2, and the bottleneck's 3-wide kernel does not fit
    spec = aniso(3, padding="valid", convs_per_block=1)
    assert output_size(spec, [10, 22, 22]) == (2, 2, 2)
    y = build(spec)(torch.randn(1, 2, 10, 22, 22))
    assert tuple(y.shape) == (1, 3, 2, 2, 2)
    with pytest.raises(SpecError, match=r"axis 0 \(size 6\)"):
        check_input_size(spec, [6, 22, 22])


def test_stride_one_along_z_keeps_z_at_every_stage() -> None:
    spec = UNetSpec(dims=3, filters=2, strides=[[1, 2, 2], [1, 2, 2], [1, 2, 2]])
    net = build(spec)
    seen: list[tuple[int, ...]] = []
    hooks = [
        block.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[2:])))
        for block in net.encoder
    ]
    y = net(torch.randn(1, 1, 3, 16, 24))
    for hook in hooks:
        hook.remove()
    assert seen == [(3, 16, 24), (3, 8, 12), (3, 4, 6), (3, 2, 3)]
    assert tuple(y.shape) == (1, 2, 3, 16, 24)
    assert size_multiple(spec) == (1, 8, 8)


def test_total_stride_is_the_per_axis_product() -> None:
    spec = UNetSpec(dims=3, strides=[[1, 2, 2], [2, 2, 2], [2, 2, 1]])
    assert size_multiple(spec) == (4, 8, 4)
    assert check_input_size(spec, [4, 8, 4]) == (4, 8, 4)
    with pytest.raises(SpecError) as info:
        check_input_size(spec, [6, 16, 16])
    message = str(info.value)
    assert "data.patch_size [6, 16, 16]" in message and "total stride is 4×8×4" in message
    assert "axis 0" in message and "nearby sizes that work: 4 or 8" in message


# ------------------------------------------------------------------ parameters


def conv_params(cin: int, cout: int, kernel: list[int] | tuple[int, ...]) -> int:
    return cin * cout * math.prod(kernel) + cout


def test_parameter_count_by_hand() -> None:
    # 3D, filters 2, in 2, classes 3, no norm; kernels (1,3,3) (3,3,3) (3,3,3), strides
    # (1,2,2) (2,2,2); widths 2, 4, 8; transposed convolutions with kernel = stride
    k0, k1, k2 = (1, 3, 3), (3, 3, 3), (3, 3, 3)
    encoder = conv_params(2, 2, k0) + conv_params(2, 2, k0)
    encoder += conv_params(2, 4, k1) + conv_params(4, 4, k1)
    encoder += conv_params(4, 8, k2) + conv_params(8, 8, k2)
    up1 = conv_params(8, 4, (2, 2, 2)) + conv_params(8, 4, k1) + conv_params(4, 4, k1)
    up0 = conv_params(4, 2, (1, 2, 2)) + conv_params(4, 2, k0) + conv_params(2, 2, k0)
    head = conv_params(2, 3, (1, 1, 1))
    expected = encoder + up1 + up0 + head
    assert expected == 38 + 38 + 220 + 436 + 872 + 1736 + 260 + 868 + 436 + 34 + 74 + 38 + 9
    net = build(aniso(3))
    assert count_parameters(net) == expected
    assert sum(n.params for n in net.field_graph().nodes) == expected
    # interp upsampling: a 1×1 convolution instead of the transposed one
    interp = expected - conv_params(8, 4, (2, 2, 2)) - conv_params(4, 2, (1, 2, 2))
    interp += conv_params(8, 4, (1, 1, 1)) + conv_params(4, 2, (1, 1, 1))
    assert count_parameters(build(aniso(3, upsample="interp"))) == interp


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("options", [{}, {"residual": True, "deep_supervision": True},
                                     {"padding": "valid", "upsample": "interp"}])  # fmt: skip
def test_defaults_reproduce_the_isotropic_network_exactly(dims: int, options: dict) -> None:
    depth = 3
    plain = UNetSpec(dims=dims, filters=2, depth=depth, **options)
    explicit = UNetSpec(
        dims=dims,
        filters=2,
        strides=[[2] * dims] * depth,
        kernel_sizes=[[3] * dims] * (depth + 1),
        **options,
    )
    assert explicit.depth == depth
    torch.manual_seed(0)
    a = build(plain)
    torch.manual_seed(0)
    b = build(explicit)
    shapes_a = {k: tuple(v.shape) for k, v in a.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.state_dict().items()}
    assert list(shapes_a) == list(shapes_b) and shapes_a == shapes_b
    assert repr(a) == repr(b)  # same modules, reprs included (ints, not per-axis tuples)
    b.load_state_dict(a.state_dict())
    size = first_valid(plain, 16)
    x = torch.randn(1, 1, *size)
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert [n.name for n in a.field_graph().nodes] == [n.name for n in b.field_graph().nodes]


def test_direct_construction_checks_stage_counts() -> None:
    with pytest.raises(SpecError, match=r"model\.strides .*expected 2 entries of 3 values"):
        UNet(3, 1, 2, depth=2, strides=[[1, 2, 2]])
    with pytest.raises(SpecError, match=r"model\.kernel_sizes .*a same-padding"):
        UNet(2, 1, 2, depth=1, kernel_sizes=[[3, 2], [3, 3]])


# ------------------------------------------------------------------ deep supervision


def test_deep_supervision_scales_and_targets_follow_the_per_axis_strides() -> None:
    from segcli.engine import train as train_engine

    spec = UNetSpec(
        dims=3,
        filters=2,
        classes=3,
        strides=[[1, 2, 2], [2, 2, 1], [2, 2, 2]],
        deep_supervision=True,
    )
    net = build(spec)
    assert net.deep_supervision_scales == [(1, 1, 1), (1, 2, 2), (2, 4, 2)]
    size = (8, 16, 8)
    outputs = net.train()(torch.randn(2, 1, *size))
    assert [tuple(o.shape[2:]) for o in outputs] == [
        tuple(n // s for n, s in zip(size, scale, strict=True))
        for scale in net.deep_supervision_scales
    ]
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, *size), generator=generator)
    loss_fn = torch.nn.CrossEntropyLoss()
    got = train_engine.compute_loss(loss_fn, outputs, target, multilabel=False)
    # by hand: each output against every scale-th target voxel per axis, weights 1, ½, ¼
    parts = []
    for out, (sz, sy, sx) in zip(outputs, net.deep_supervision_scales, strict=True):
        sub = target[:, ::sz, ::sy, ::sx]
        assert sub.shape[1:] == out.shape[2:]
        parts.append(F.cross_entropy(out, sub))
    expected = (parts[0] + parts[1] / 2 + parts[2] / 4) / 1.75
    torch.testing.assert_close(got, expected)


def test_two_training_iterations_of_an_anisotropic_3d_unet(
    tmp_path: Path, toy3d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segcli.engine import train as train_engine

    exp = from_dict(
        {
            "name": "aniso",
            "data": {"root": str(toy3d), "patch_size": [4, 16, 16], "val_fraction": 0.34},
            "model": {
                "arch": "unet",
                "dims": 3,
                "filters": 2,
                "strides": STRIDES_3D,
                "kernel_sizes": KERNELS_3D,
                "deep_supervision": True,
            },
            "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0},
            "inference": {"batch_size": 4},
            "output": str(tmp_path / "runs"),
        }
    )
    seen: list[list[tuple[int, ...]]] = []
    original = train_engine.compute_loss

    def spy(loss_fn, output, target, multilabel, grids=None):  # type: ignore[no-untyped-def]
        seen.append([tuple(o.shape) for o in output])
        return original(loss_fn, output, target, multilabel, grids=grids)

    monkeypatch.setattr(train_engine, "compute_loss", spy)
    result = train_engine.fit(exp, device="cpu")
    assert seen == [[(2, 2, 4, 16, 16), (2, 2, 4, 8, 8)]] * 2
    assert np.isfinite(result.rows[-1]["train_loss"]) and np.isfinite(result.rows[-1]["val_dice"])


stage_strides = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None)
@given(
    strides=stage_strides,
    kernel=st.lists(st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3])), min_size=4),
    padding=st.sampled_from(["same", "valid"]),
    upsample=st.sampled_from(["transpose", "interp"]),
    residual=st.booleans(),
)
def test_random_stages_forward_matches_the_graph(
    strides: list[tuple[int, int]],
    kernel: list[tuple[int, int]],
    padding: str,
    upsample: str,
    residual: bool,
) -> None:
    spec = UNetSpec(
        filters=1,
        norm="none",
        strides=[list(s) for s in strides],
        kernel_sizes=[list(k) for k in kernel[: len(strides) + 1]],
        padding=padding,
        upsample=upsample,
        residual=residual,
    )
    net = build(spec)
    graph = net.field_graph()
    assert sum(node.params for node in graph.nodes) == count_parameters(net)
    total = size_multiple(spec)
    assert total == tuple(math.prod(s[a] for s in strides) for a in range(2))
    size = first_valid(spec, 2) if padding == "valid" else tuple(2 * t for t in total)
    with torch.no_grad():
        y = net.eval()(torch.randn(1, 1, *size))
    assert tuple(y.shape[2:]) == graph.sizes(size)[graph.output.index] == output_size(spec, size)
    if padding == "same":
        assert tuple(y.shape[2:]) == size
