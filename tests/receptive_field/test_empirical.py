"""The measured receptive field against the analytic one, for every registered architecture."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segcli.config.schema import CNNSpec, DilatedSpec, FCNSpec, PatchCNNSpec, UNetSpec
from segcli.models import ARCHITECTURES, build, field_graph
from segcli.receptive_field import analyse
from segcli.receptive_field.empirical import empirical_receptive_field, make_probe

TINY: dict[str, list[Any]] = {
    "cnn": [CNNSpec(filters=2), CNNSpec(filters=2, kernel_size=4, padding="front"),
            CNNSpec(dims=3, filters=1, layers=2, norm="batch")],
    "dilated": [DilatedSpec(filters=2), DilatedSpec(filters=2, dilations=[2, 1, 3], padding="valid"),
                DilatedSpec(dims=3, filters=1, dilations=[1, 2])],
    "patch_cnn": [PatchCNNSpec(filters=1, hidden=1, input_size=19, kernel_sizes=[2, 2]),
                  PatchCNNSpec(filters=1, hidden=1, mode="window")],
    "fcn": [FCNSpec(filters=1, convs_per_stage=[1, 1, 1], fc_filters=1),
            FCNSpec(filters=1, convs_per_stage=[1, 2], variant="32s", fc_filters=1, fc_kernel=5)],
    "unet": [UNetSpec(filters=1, depth=2, norm="instance"),
             UNetSpec(filters=1, depth=2, padding="valid", upsample="interp", residual=True),
             UNetSpec(filters=1, depth=3, deep_supervision=True, norm="batch"),
             UNetSpec(dims=3, filters=1, depth=1),
             # anisotropic (nnU-Net style): no pooling and 1-wide kernels along z at first
             UNetSpec(dims=3, filters=1, strides=[[1, 2, 2], [2, 2, 2]],
                      kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]]),
             UNetSpec(dims=3, filters=1, strides=[[1, 2, 2], [2, 2, 2]],
                      kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], padding="valid",
                      upsample="interp", residual=True),
             UNetSpec(filters=1, strides=[[1, 2], [3, 1]], kernel_sizes=[[1, 3], [3, 5], [5, 1]],
                      deep_supervision=True)],
}  # fmt: skip
HAS_POOLING = {"patch_cnn", "fcn", "unet"}


def test_every_architecture_has_tiny_cases() -> None:
    assert set(TINY) == set(ARCHITECTURES.names())


def _analytic(spec: Any) -> tuple[int, ...]:
    graph = field_graph(spec)
    # per axis the first length from 19 on that fits (anisotropic networks differ per axis)
    size = [next((n for n in range(19, 400) if graph.fits(n, a)), None) for a in range(spec.dims)]
    if None in size:
        raise AssertionError(f"no size fits {spec}")
    return analyse(graph, size).receptive_field


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_analytic_matches_or_bounds_the_measurement(arch: str) -> None:
    for spec in TINY[arch]:
        torch.manual_seed(0)
        analytic = _analytic(spec)
        measured = empirical_receptive_field(build(spec))
        if arch in HAS_POOLING:
            # the analytic figure (largest over positions) bounds the measurement ...
            assert all(a >= m for a, m in zip(analytic, measured, strict=True)), spec
            # ... and composing exact index maps makes the bound tight
            assert analytic == measured, spec
        else:
            assert analytic == measured, spec


def test_lecture_fields_are_measured() -> None:
    assert empirical_receptive_field(build(CNNSpec(layers=3))) == (7, 7)
    assert empirical_receptive_field(build(DilatedSpec(dilations=[1, 2, 4]))) == (15, 15)


def test_probe_is_linear_positive_and_pools_by_averaging() -> None:
    spec = UNetSpec(filters=2, depth=1, norm="batch", activation="prelu", dropout=0.3)
    probe = make_probe(build(spec))
    kinds = {type(m) for m in probe.modules()}
    assert nn.MaxPool2d not in kinds and nn.AvgPool2d in kinds
    assert not kinds & {nn.BatchNorm2d, nn.PReLU, nn.Dropout}
    a = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    b = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(probe(a + 2 * b), probe(a) + 2 * probe(b))
    assert (probe(a) > 0).all()


def test_measurement_grows_the_input_until_the_field_fits() -> None:
    # the start size is far smaller than the 95-pixel window: the measurement must still be 95
    net = build(PatchCNNSpec(filters=1, hidden=1, mode="window"))
    assert empirical_receptive_field(net, start_size=95) == (95, 95)
    dilated = build(DilatedSpec(filters=1, dilations=[1, 2, 4, 8]))
    assert empirical_receptive_field(dilated, start_size=8) == (31, 31)


def test_max_pooling_would_hide_inputs_from_the_gradient() -> None:
    # why the probe swaps max for average pooling: with max-pooling, one output's gradient
    # reaches only the arg-max inputs, and the measured field collapses
    torch.manual_seed(0)
    spec = UNetSpec(filters=1, depth=1, norm="none")
    net = build(spec).double().eval()
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    net(x)[0, 0, 8, 8].backward()
    raw_support = int((x.grad != 0).sum())
    probe = make_probe(net)
    y = torch.ones(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    probe(y)[0, 0, 8, 8].backward()
    assert int((y.grad != 0).sum()) > raw_support


def test_anisotropic_unet_field_is_per_axis() -> None:
    # the 1-wide first-stage kernels and the unpooled first stage make z see much less
    spec = UNetSpec(dims=3, filters=1, strides=[[1, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])  # fmt: skip
    measured = empirical_receptive_field(build(spec))
    assert measured == _analytic(spec)
    assert measured[1] == measured[2] > measured[0]
    isotropic = empirical_receptive_field(build(UNetSpec(dims=3, filters=1, depth=2)))
    assert isotropic[0] == isotropic[1] == measured[1]  # in-plane, the same network


def test_probe_pools_anisotropically() -> None:
    spec = UNetSpec(dims=3, filters=1, strides=[[1, 2, 2]], kernel_sizes=[[1, 3, 3], [3, 3, 3]])
    probe = make_probe(build(spec))
    pools = [m for m in probe.modules() if isinstance(m, nn.AvgPool3d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [((1, 2, 2), (1, 2, 2))]


@settings(max_examples=10, deadline=None)
@given(
    strides=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 2)), min_size=1, max_size=2),
    kernels=st.lists(st.tuples(st.sampled_from([1, 3]), st.sampled_from([1, 3, 5])), min_size=3),
    padding=st.sampled_from(["same", "valid"]),
    upsample=st.sampled_from(["transpose", "interp"]),
)
def test_random_anisotropic_unets_analytic_equals_empirical(
    strides: list[tuple[int, int]],
    kernels: list[tuple[int, int]],
    padding: str,
    upsample: str,
) -> None:
    spec = UNetSpec(
        filters=1,
        strides=[list(s) for s in strides],
        kernel_sizes=[list(k) for k in kernels[: len(strides) + 1]],
        padding=padding,
        upsample=upsample,
    )
    assert _analytic(spec) == empirical_receptive_field(build(spec))
