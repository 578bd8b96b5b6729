"""Every registered architecture: shapes (2D/3D, odd/even sizes), gradients, parameter counts,
the graph mirror of ``forward``, the lecture's figures and clear errors for impossible settings."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from segcli.config.schema import (
    ARCH_NAMES,
    CNNSpec,
    DilatedSpec,
    FCNSpec,
    ModelSpec,
    PatchCNNSpec,
    UNetSpec,
)
from segcli.errors import SpecError
from segcli.models import (
    ARCHITECTURES,
    build,
    check_input_size,
    count_parameters,
    output_size,
    size_multiple,
)
from segcli.models.fcn import bilinear_kernel
from segcli.models.patch_cnn import window_extent

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

SPEC_CLASSES = {"cnn": CNNSpec, "dilated": DilatedSpec, "patch_cnn": PatchCNNSpec,
                "fcn": FCNSpec, "unet": UNetSpec}  # fmt: skip


def tiny(arch: str, dims: int = 2, **options: Any) -> Any:
    """The smallest meaningful configuration of ``arch`` (a few hundred parameters)."""
    base: dict[str, dict[str, Any]] = {
        "cnn": {"filters": 3},
        "dilated": {"filters": 3},
        "patch_cnn": {"filters": 2, "hidden": 4, "input_size": 19, "kernel_sizes": [2, 2]},
        "fcn": {"filters": 2, "convs_per_stage": [1, 1, 1], "fc_filters": 4},
        "unet": {"filters": 2, "depth": 2},
    }
    return SPEC_CLASSES[arch](dims=dims, in_channels=2, classes=3, **{**base[arch], **options})


def sizes_for(spec: Any) -> list[tuple[int, ...]]:
    """An odd and an even size per axis (odd multiples of the stride where one is needed)."""
    m = size_multiple(spec)[0]
    odd, even = (9, 10) if m == 1 else (3 * m, 4 * m)
    if spec.arch == "patch_cnn" and spec.mode == "window":
        odd, even = 19 + 4 * 3, 19 + 4 * 4  # the window plus whole strides
    return [(odd,) * spec.dims, (even,) * spec.dims, (odd, even, odd)[: spec.dims]]


def test_registry_matches_the_schema() -> None:
    spec_union = typing.get_args(typing.get_args(ModelSpec)[0])
    tags = {typing.get_args(cls.model_fields["arch"].annotation)[0] for cls in spec_union}
    assert tags == set(ARCHITECTURES.names()) == set(ARCH_NAMES)


def test_unknown_architecture_suggests_a_name() -> None:
    class Fake:
        arch = "unett"

    with pytest.raises(SpecError, match=r"did you mean 'unet'"):
        build(Fake())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_forward_shapes_match_output_size(arch: str, dims: int) -> None:
    spec = tiny(arch, dims)
    torch.manual_seed(0)
    net = build(spec)
    for size in sizes_for(spec):
        y = net(torch.randn(2, 2, *size))
        assert isinstance(y, torch.Tensor)
        assert y.shape == (2, 3, *output_size(spec, size))
        if arch in ("cnn", "dilated", "fcn", "unet") or spec.mode == "dense":
            assert tuple(y.shape[2:]) == size  # same padding: out == patch


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_backward_reaches_every_parameter(arch: str) -> None:
    spec = tiny(arch, 2)
    net = build(spec)
    size = sizes_for(spec)[1]
    net(torch.randn(2, 2, *size)).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


VARIANTS = [
    CNNSpec(padding="front"),
    CNNSpec(padding="front", kernel_size=4, pad_mode="reflect"),
    CNNSpec(padding="valid", norm="batch", activation="gelu"),
    CNNSpec(kernel_size=2, pad_mode="replicate", norm="group", activation="prelu"),
    DilatedSpec(dilations=[1, 3, 2], padding="valid", activation="elu", norm="instance"),
    DilatedSpec(dims=3, padding="front", filters=2),
    PatchCNNSpec(filters=2, hidden=3, padding="valid", pad_mode="reflect"),
    PatchCNNSpec(filters=2, hidden=3, mode="window", activation="leaky_relu"),
    FCNSpec(filters=2, variant="32s", convs_per_stage=[1, 2]),
    FCNSpec(filters=2, variant="16s", convs_per_stage=[1, 1], norm="batch", fc_kernel=1),
    FCNSpec(filters=2, max_filters=4, fc_kernel=5),
    UNetSpec(filters=2, depth=3, max_filters=4, norm="group", activation="relu"),
    UNetSpec(filters=2, depth=2, padding="valid", upsample="interp", residual=True),
    UNetSpec(filters=2, depth=1, residual=True, dropout=0.5, convs_per_block=3, kernel_size=5),
    UNetSpec(filters=2, depth=2, dims=3, norm="batch", upsample="interp"),
    UNetSpec(filters=2, depth=2, padding="valid", kernel_size=2, norm="none"),
]


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: f"{s.arch}-{s.dims}d")
def test_variants_run_and_the_graph_mirrors_forward(spec: Any) -> None:
    net = build(spec)
    graph = net.field_graph()
    assert sum(node.params for node in graph.nodes) == count_parameters(net)
    m = size_multiple(spec)[0]
    base = {"cnn": 11, "dilated": 20, "patch_cnn": 100, "fcn": 3 * m, "unet": 3 * m}[spec.arch]
    if spec.arch == "unet" and spec.padding == "valid":
        base = next(n for n in range(base, base + 200) if _fits(spec, n))
    size = (base,) * spec.dims
    y = net(torch.randn(1, spec.in_channels, *size))
    assert y.shape == (1, spec.num_classes, *output_size(spec, size))
    assert tuple(y.shape[2:]) == graph.sizes(size)[graph.output.index]


def _fits(spec: Any, n: int) -> bool:
    try:
        output_size(spec, (n,) * spec.dims)
    except SpecError:
        return False
    return True


# ------------------------------------------------------------------ parameter counts by hand


def conv_params(cin: int, cout: int, k: int, dims: int) -> int:
    return cin * cout * k**dims + cout


@pytest.mark.parametrize("dims", [2, 3])
def test_toy_cnn_and_dilated_have_the_same_hand_computed_count(dims: int) -> None:
    expected = (
        conv_params(1, 8, 3, dims) + 2 * conv_params(8, 8, 3, dims) + conv_params(8, 2, 1, dims)
    )
    cnn = CNNSpec(dims=dims, filters=8, layers=3)
    dilated = DilatedSpec(dims=dims, filters=8, dilations=[1, 2, 4])
    assert count_parameters(build(cnn)) == count_parameters(build(dilated)) == expected
    if dims == 2:
        assert expected == 80 + 584 + 584 + 18


def unet_params(cin: int, classes: int, filters: int, depth: int, k: int = 3) -> int:
    """The paper's U-Net counted layer by layer (valid or same padding: same weights)."""
    widths = [filters * 2**level for level in range(depth + 1)]
    total, c = 0, cin
    for w in widths:  # encoder blocks incl. bottleneck: two k×k convs each
        total += conv_params(c, w, k, 2) + conv_params(w, w, k, 2)
        c = w
    for w in reversed(widths[:-1]):  # 2×2 up-convolution halving, then two convs on the concat
        total += conv_params(c, w, 2, 2) + conv_params(2 * w, w, k, 2) + conv_params(w, w, k, 2)
        c = w
    return total + conv_params(c, classes, 1, 2)


@pytest.mark.parametrize(("filters", "depth"), [(2, 1), (3, 2), (4, 3)])
def test_unet_count_matches_the_layer_by_layer_count(filters: int, depth: int) -> None:
    spec = UNetSpec(filters=filters, depth=depth, norm="none", in_channels=2, classes=3)
    assert count_parameters(build(spec)) == unet_params(2, 3, filters, depth)


def test_unet_2015_is_the_papers_network() -> None:
    from segcli.config import load

    spec = load(EXPERIMENTS / "unet-2015.yaml").model
    with torch.device("meta"):
        net = build(spec)
        y = net(torch.empty(1, 1, 572, 572))  # shape-only forward on the meta device
    assert count_parameters(net) == unet_params(1, 2, 64, 4) == 31_030_658
    assert tuple(y.shape) == (1, 2, 388, 388)
    assert output_size(spec, [572, 572]) == (388, 388)


@pytest.mark.slow
def test_unet_2015_real_forward_572() -> None:
    from segcli.config import load

    spec = load(EXPERIMENTS / "unet-2015.yaml").model
    with torch.no_grad():
        y = build(spec).eval()(torch.randn(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388) and torch.isfinite(y).all()


def test_patch_cnn_count_matches_the_lecture_table() -> None:
    # 4×4, 5×5, 4×4, 4×4 convolutions with 48 maps; FC over 48 maps of 3×3 → 200; FC 200 → 2
    expected = (
        conv_params(1, 48, 4, 2)
        + conv_params(48, 48, 5, 2)
        + 2 * conv_params(48, 48, 4, 2)
        + (48 * 3 * 3 * 200 + 200)
        + (200 * 2 + 2)
    )
    for mode in ("window", "dense"):
        assert count_parameters(build(PatchCNNSpec(mode=mode))) == expected == 219_290


def test_fcn_count_matches_the_layer_by_layer_count() -> None:
    spec = FCNSpec(filters=2, convs_per_stage=[1, 2, 1], fc_filters=5, fc_kernel=3, classes=3)
    widths = [2, 4, 8]
    encoder = conv_params(1, 2, 3, 2) + conv_params(2, 4, 3, 2) + conv_params(4, 4, 3, 2)
    encoder += conv_params(4, 8, 3, 2)
    fc = conv_params(8, 5, 3, 2) + conv_params(5, 5, 1, 2) + conv_params(5, 3, 1, 2)
    # 8s: two score layers on pool2 (4 maps) and pool1 (2 maps), two 4×4 up-convolutions
    fuse = conv_params(widths[1], 3, 1, 2) + conv_params(widths[0], 3, 1, 2)
    fuse += 2 * conv_params(3, 3, 4, 2)
    assert count_parameters(build(spec)) == encoder + fc + fuse


# ------------------------------------------------------------------ behaviour


def test_patch_cnn_dense_equals_the_sliding_window_classifier() -> None:
    torch.manual_seed(0)
    dense_spec = PatchCNNSpec(filters=3, hidden=5, input_size=19, kernel_sizes=[2, 2])
    dense = build(dense_spec).double().eval()
    window = build(dense_spec.model_copy(update={"mode": "window"})).double().eval()
    window.load_state_dict(dense.state_dict())  # same parameters in both modes
    image = torch.randn(1, 1, 13, 12, dtype=torch.float64)
    with torch.no_grad():
        out = dense(image)
        assert out.shape == (1, 2, 13, 12)
        padded = torch.nn.functional.pad(image, (9, 9, 9, 9))  # half a window of zeros
        # every window centred on a pixel, classified one by one (batched for speed)
        windows = torch.cat(
            [padded[..., y : y + 19, x : x + 19] for y in range(13) for x in range(12)]
        )
        expected = window(windows)[:, :, 0, 0].T.reshape(1, 2, 13, 12)
    torch.testing.assert_close(out, expected)


def test_patch_cnn_window_runs_fully_convolutionally_with_stride_16() -> None:
    net = build(PatchCNNSpec(filters=2, hidden=3, mode="window")).double().eval()
    image = torch.randn(1, 1, 95 + 16 * 2, 95 + 16, dtype=torch.float64)
    with torch.no_grad():
        out = net(image)
        assert out.shape == (1, 2, 3, 2)
        torch.testing.assert_close(out[0, :, 2, 1], net(image[..., 32:127, 16:111])[0, :, 0, 0])


def test_patch_cnn_rejects_a_window_that_shrinks_to_nothing() -> None:
    with pytest.raises(SpecError, match=r"model\.input_size 20 is too small"):
        build(PatchCNNSpec(input_size=20))
    assert window_extent(95, [4, 5, 4, 4]) == (3, 95)


def test_unet_deep_supervision_returns_coarser_outputs_only_in_training() -> None:
    spec = UNetSpec(filters=2, depth=3, deep_supervision=True, classes=3)
    net = build(spec)
    outs = net(torch.randn(2, 1, 16, 16))
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
    net.eval()
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 3, 16, 16)


def test_dropout_is_active_only_in_training() -> None:
    net = build(UNetSpec(filters=2, depth=1, dropout=0.5, norm="none"))
    x = torch.randn(1, 1, 8, 8)
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_fcn_upsampling_starts_as_bilinear_interpolation() -> None:
    net = build(FCNSpec(filters=2, variant="16s", convs_per_stage=[1, 1], classes=2))
    up = net.ups[0]
    x = torch.randn(1, 2, 4, 4)
    expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
    # interior pixels of a bilinear 4×4/stride-2 transposed convolution equal interpolation
    torch.testing.assert_close(up(x)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])
    assert bilinear_kernel(3, 4).shape == (4, 4, 4)


def test_models_output_logits_not_probabilities() -> None:
    for arch in ARCHITECTURES.names():
        spec = tiny(arch)
        y = build(spec)(torch.randn(2, 2, *sizes_for(spec)[1]) * 10)
        assert not torch.allclose(y.softmax(1).sum(1), y.sum(1))
        assert (y < 0).any() or (y > 1).any()


# ------------------------------------------------------------------ impossible settings


def test_valid_unet_on_an_input_that_shrinks_to_nothing() -> None:
    spec = UNetSpec(padding="valid", depth=4, filters=4)
    with pytest.raises(SpecError) as err:
        check_input_size(spec, [64, 64])
    message = str(err.value)
    assert "data.patch_size [64, 64]" in message
    assert "too small" in message and "smallest size that works is 188" in message
    with pytest.raises(SpecError, match=r"'down3\.conv1' needs at least 3 voxels but gets 2"):
        check_input_size(spec, [44, 188])  # 44 → 40 → 20 → 16 → 8 → 4 → 2: no 3×3 fits


def test_valid_unet_suggests_the_neighbouring_sizes() -> None:
    spec = UNetSpec(padding="valid", depth=4, filters=4)
    with pytest.raises(SpecError, match=r"570.*nearby sizes that work: 556 or 572"):
        output_size(spec, [572, 570])


def test_depth_too_large_for_the_patch() -> None:
    spec = UNetSpec(depth=6, filters=2)
    assert size_multiple(spec) == (64, 64)
    with pytest.raises(SpecError, match=r"data\.patch_size \[32, 32\].*total stride is 64"):
        check_input_size(spec, [32, 32])


def test_same_unet_needs_sizes_divisible_by_the_stride() -> None:
    with pytest.raises(SpecError, match=r"nearby sizes that work: 24 or 32"):
        check_input_size(UNetSpec(depth=3), [28, 32])
    assert check_input_size(UNetSpec(depth=3), [24, 32]) == (24, 32)


def test_wrong_number_of_sizes() -> None:
    with pytest.raises(SpecError, match=r"has 3 entries but model\.dims is 2"):
        output_size(CNNSpec(), [8, 8, 8])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (FCNSpec(variant="8s", convs_per_stage=[1, 1]), r"model\.variant '8s'.*2"),
        (FCNSpec(fc_kernel=4), r"model\.fc_kernel must be odd"),
        (UNetSpec(kernel_size=4), r"model\.kernel_size 4"),
    ],
)
def test_impossible_specs_are_spec_errors(spec: Any, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        build(spec)
