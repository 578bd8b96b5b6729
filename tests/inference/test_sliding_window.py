"""Sliding-window stitching (segcli/inference/sliding_window.py).

The checks, from exact to approximate: a pointwise model (1×1 convolution, or an affine map)
gives exactly the whole-image softmax for any patch, overlap, image size and blend; a fully
convolutional model gives the whole-image output wherever every covering window sees the
voxel's whole receptive field, and everywhere it matches a slow window-by-window reference;
padding, TTA, multilabel, batching, memory layout and errors are checked on their own.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segcli.inference import sliding_window
from segcli.inference.sliding_window import accumulator_device, mirror_axes
from segcli.inference.windows import window_starts

CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def pointwise(dims: int, channels: int, classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = CONV[dims](channels, classes, 1)
    with torch.no_grad():
        model.weight.mul_(3.0)  # confident enough that the softmax is far from uniform
    return model.eval()


def fully_convolutional(dims: int, channels: int, classes: int, seed: int = 0) -> nn.Module:
    """Two 3^dims convolutions with zero padding: receptive radius 2 voxels."""
    torch.manual_seed(seed)
    return nn.Sequential(
        CONV[dims](channels, 4, 3, padding=1),
        nn.Tanh(),
        CONV[dims](4, classes, 3, padding=1),
    ).eval()


class Affine(nn.Module):
    """``x ↦ (2x + 1, −x)``: a pointwise 'model' without parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * 2 + 1, -x], dim=1)


def whole(model: nn.Module, image: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    with torch.no_grad():
        logits = model(image[None])[0]
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=0)


def gaussian(p: int) -> np.ndarray:
    x = np.arange(p) - (p - 1) / 2
    return np.exp(-(x**2) / (2 * (p / 8) ** 2))


def reference(
    model: nn.Module,
    image: torch.Tensor,
    patch: tuple[int, ...],
    overlap: float,
    blend: str,
    tta: bool = False,
    multilabel: bool = False,
) -> torch.Tensor:
    """Slow and obvious: one window at a time, float64 numpy accumulators (image ≥ patch)."""
    spatial = image.shape[1:]
    acc, wsum = None, np.zeros(spatial)
    weight = np.ones(patch)
    if blend == "gaussian":
        weight = np.ones(())
        for p in patch:
            weight = np.multiply.outer(weight, gaussian(p))
    flips = [()]
    if tta:
        axes = range(1, 1 + len(patch))
        flips = [c for k in range(len(patch) + 1) for c in itertools.combinations(axes, k)]
    for corner in itertools.product(*window_starts(spatial, patch, overlap)):
        region = (slice(None),) + tuple(slice(s, s + p) for s, p in zip(corner, patch, strict=True))
        window = image[region]
        probs = np.mean(
            [whole(model, window.flip(f), multilabel).flip(f).double().numpy() for f in flips],
            axis=0,
        )
        if acc is None:
            acc = np.zeros((probs.shape[0], *spatial))
        acc[region] += probs * weight
        wsum[region[1:]] += weight
    assert acc is not None
    return torch.from_numpy(acc / wsum).float()


def good_voxels(spatial, patch, overlap: float, radius: int) -> np.ndarray:
    """Voxels that every covering window sees with their whole receptive field.

    A window edge that is also an image edge does not count: there the window is zero-padded
    exactly as the whole image is.
    """
    masks = []
    for n, p, starts in zip(spatial, patch, window_starts(spatial, patch, overlap), strict=True):
        good = np.ones(n, dtype=bool)
        for x in range(n):
            for s in starts:
                if s <= x < s + p:
                    near_start = s > 0 and x - s < radius
                    near_end = s + p < n and s + p - 1 - x < radius
                    good[x] &= not (near_start or near_end)
        masks.append(good)
    out = masks[0]
    for mask in masks[1:]:
        out = np.logical_and.outer(out, mask)
    return out


# --------------------------------------------------------------------------- exact stitching


@st.composite
def geometry(draw: st.DrawFn) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    dims = draw(st.sampled_from([2, 3]))
    top = 12 if dims == 2 else 8
    patch = tuple(draw(st.integers(1, top)) for _ in range(dims))
    size = tuple(draw(st.integers(1, top + 4)) for _ in range(dims))  # also smaller than patch
    return dims, patch, size


@settings(max_examples=60, deadline=None)
@given(
    geometry(),
    st.floats(0.0, 0.9),
    st.sampled_from(["gaussian", "constant"]),
    st.integers(1, 5),
    st.integers(1, 2),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from(["minimum", "edge", "reflect", "constant"]),
)
def test_pointwise_model_stitches_to_the_whole_image_output(
    geo, overlap, blend, batch_size, channels, classes, multilabel, pad_mode
) -> None:
    dims, patch, size = geo
    model = pointwise(dims, channels, classes)
    image = torch.randn(channels, *size, generator=torch.Generator().manual_seed(1))
    out = sliding_window(
        model,
        image,
        patch,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        multilabel=multilabel,
        pad_mode=pad_mode,
    )
    expected = whole(model, image, multilabel)
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(geometry(), st.floats(0.0, 0.9), st.sampled_from(["gaussian", "constant"]))
def test_parameter_free_affine_model(geo, overlap: float, blend: str) -> None:
    _dims, patch, size = geo
    image = torch.randn(1, *size, generator=torch.Generator().manual_seed(2))
    out = sliding_window(Affine(), image, patch, overlap=overlap, blend=blend)
    assert torch.allclose(out, whole(Affine(), image), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "patch", "overlap"),
    [((40, 37), (16, 16), 0.5), ((33, 24), (12, 9), 0.25), ((20, 17, 15), (10, 8, 8), 0.5)],
)
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_fully_convolutional_interior_equals_whole_image(size, patch, overlap, blend) -> None:
    dims = len(size)
    model = fully_convolutional(dims, 1, 3)
    image = torch.randn(1, *size, generator=torch.Generator().manual_seed(3))
    out = sliding_window(model, image, patch, overlap=overlap, blend=blend, batch_size=3)
    full = whole(model, image)
    good = torch.from_numpy(good_voxels(size, patch, overlap, radius=2))
    assert good.float().mean() > 0.1  # a sizeable share of the image is checked exactly
    assert torch.allclose(out[:, good], full[:, good], atol=1e-5)
    # the check can fail: near interior window edges the windows do see zero padding
    assert float((out - full)[:, ~good].abs().max()) > 1e-4


@pytest.mark.parametrize(
    ("size", "patch", "overlap"),
    [((23, 18), (8, 8), 0.5), ((19, 21), (7, 10), 0.3), ((11, 12, 9), (6, 5, 4), 0.6)],
)
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_fully_convolutional_model_matches_slow_reference(size, patch, overlap, blend) -> None:
    model = fully_convolutional(len(size), 2, 3)
    image = torch.randn(2, *size, generator=torch.Generator().manual_seed(4))
    out = sliding_window(model, image, patch, overlap=overlap, blend=blend, batch_size=4)
    expected = reference(model, image, patch, overlap, blend)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out.sum(0), torch.ones(size), atol=1e-5)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize(
    ("pad_mode", "np_mode", "fill"),
    [
        ("minimum", "constant", "min"),
        ("constant", "constant", 3.0),
        ("edge", "edge", None),
        ("reflect", "reflect", None),
    ],
)
def test_small_image_is_padded_like_training_and_cropped_back(pad_mode, np_mode, fill) -> None:
    model = fully_convolutional(2, 1, 2)
    image = torch.rand(1, 5, 6, generator=torch.Generator().manual_seed(5)) + 5.0  # min > 0
    out = sliding_window(model, image, (8, 8), pad_mode=pad_mode, pad_value=3.0)
    width = [(0, 0), (1, 2), (1, 1)]  # centred: before = total // 2
    kwargs = {}
    if np_mode == "constant":
        kwargs["constant_values"] = float(image.min()) if fill == "min" else fill
    padded = torch.from_numpy(np.pad(image.numpy(), width, mode=np_mode, **kwargs))
    expected = whole(model, padded)[:, 1:6, 1:7]
    assert out.shape == (2, 5, 6)
    assert torch.allclose(out, expected, atol=1e-6)


def test_minimum_padding_differs_from_zero_padding() -> None:
    model = fully_convolutional(2, 1, 2)
    image = torch.rand(1, 5, 6, generator=torch.Generator().manual_seed(5)) + 5.0
    by_min = sliding_window(model, image, (8, 8))
    by_zero = sliding_window(model, image, (8, 8), pad_mode="constant", pad_value=0.0)
    assert not torch.allclose(by_min, by_zero, atol=1e-4)


# --------------------------------------------------------------------------- TTA


def symmetric_conv(dims: int, cin: int, cout: int) -> nn.Module:
    conv = CONV[dims](cin, cout, 3, padding=1)
    with torch.no_grad():
        w = conv.weight
        flips = mirror_axes(dims)  # weight dims 2.. are the spatial ones, as in a batch
        conv.weight.copy_(sum(w.flip(f) if f else w for f in flips) / len(flips))
    return conv


@pytest.mark.parametrize("dims", [2, 3])
def test_tta_with_flip_equivariant_model_equals_no_tta(dims: int) -> None:
    torch.manual_seed(6)
    model = nn.Sequential(symmetric_conv(dims, 1, 4), nn.ReLU(), symmetric_conv(dims, 4, 3)).eval()
    size = (14, 11) if dims == 2 else (9, 8, 10)
    patch = (8, 8) if dims == 2 else (6, 5, 6)
    image = torch.randn(1, *size)
    plain = sliding_window(model, image, patch, tta=False)
    mirrored = sliding_window(model, image, patch, tta=True)
    assert torch.allclose(plain, mirrored, atol=1e-5)


def test_tta_averages_the_flipped_predictions() -> None:
    model = fully_convolutional(2, 1, 3)  # not flip-equivariant: TTA changes the result
    image = torch.randn(1, 15, 13, generator=torch.Generator().manual_seed(7))
    out = sliding_window(model, image, (8, 8), overlap=0.5, tta=True, batch_size=2)
    assert torch.allclose(
        out, reference(model, image, (8, 8), 0.5, "gaussian", tta=True), atol=1e-5
    )
    assert not torch.allclose(out, sliding_window(model, image, (8, 8), overlap=0.5), atol=1e-4)


def test_mirror_axes_lists_every_combination() -> None:
    assert mirror_axes(2) == [(), (2,), (3,), (2, 3)]
    assert len(mirror_axes(3)) == 8 and len(set(mirror_axes(3))) == 8


# --------------------------------------------------------------------------- batching, outputs


class Recorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.inner(x)


def test_windows_run_in_batches_of_at_most_batch_size() -> None:
    model = Recorder(pointwise(2, 1, 2))
    image = torch.randn(1, 30, 30)
    sliding_window(model, image, (10, 10), overlap=0.5, batch_size=4)
    n = len(window_starts((30, 30), (10, 10), 0.5)[0]) ** 2  # 5 × 5 windows
    assert model.batches == [4] * (n // 4) + [n % 4]


def test_tta_multiplies_forward_passes_by_2_to_the_dims() -> None:
    model = Recorder(pointwise(3, 1, 2))
    sliding_window(model, torch.randn(1, 6, 6, 6), (6, 6, 6), tta=True)
    assert model.batches == [1] * 8


class DeepSupervision(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = pointwise(2, 1, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        full = self.head(x)
        return [full, full[:, :, ::2, ::2]]


def test_list_output_uses_the_full_resolution_element() -> None:
    image = torch.randn(1, 12, 9)
    out = sliding_window(DeepSupervision(), image, (8, 8))
    assert torch.allclose(out, whole(DeepSupervision().head, image), atol=1e-6)


def test_multilabel_uses_sigmoid_per_channel() -> None:
    model = pointwise(2, 1, 3)
    image = torch.randn(1, 13, 10)
    out = sliding_window(model, image, (6, 6), multilabel=True)
    assert torch.allclose(out, torch.sigmoid(model(image[None])[0]).detach(), atol=1e-6)
    assert not torch.allclose(out.sum(0), torch.ones(13, 10), atol=1e-2)


def test_valid_padding_network_is_refused_clearly() -> None:
    model = nn.Conv2d(1, 2, 3).eval()  # 8×8 → 6×6
    with pytest.raises(ValueError, match=r"smaller than their input.*not supported"):
        sliding_window(model, torch.randn(1, 10, 10), (8, 8))


def test_result_is_an_ordinary_tensor_the_caller_may_modify() -> None:
    out = sliding_window(pointwise(2, 1, 2), torch.randn(1, 9, 9), (4, 4))
    assert not out.is_inference()
    out.add_(1.0)  # an inference tensor would raise here


def test_numpy_and_integer_images_are_accepted() -> None:
    model = pointwise(2, 1, 2)
    image = np.arange(60, dtype=np.int16).reshape(1, 6, 10)
    out = sliding_window(model, image, (4, 4))
    assert torch.allclose(out, whole(model, torch.from_numpy(image).float()), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": torch.zeros(8, 8)}, "spatial axes"),
        ({"overlap": 1.0}, "overlap must be in"),
        ({"blend": "linear"}, "blend must be one of"),
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"pad_mode": "zeros"}, "pad_mode must be one of"),
        ({"patch_size": (0, 4)}, "patch_size must be positive"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    args = {"image": torch.zeros(1, 8, 8), "patch_size": (4, 4)} | kwargs
    with pytest.raises(ValueError, match=message):
        sliding_window(pointwise(2, 1, 2), **args)


# --------------------------------------------------------------------------- layout, device


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_gives_the_same_result_and_restores_the_weights(dims: int) -> None:
    model = fully_convolutional(dims, 1, 3)
    params = list(model.parameters())
    strides = [p.stride() for p in params]
    size, patch = ((20, 17), (8, 8)) if dims == 2 else ((12, 10, 9), (6, 6, 6))
    image = torch.randn(1, *size)
    fast = sliding_window(model, image, patch, channels_last=True)
    plain = sliding_window(model, image, patch, channels_last=False)
    assert torch.allclose(fast, plain, atol=1e-5)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert [p.stride() for p in model.parameters()] == strides
    assert not any(p.is_inference() for p in model.parameters())
    model(image[None]).sum().backward()  # still trainable (validation runs mid-training)
    assert all(p.grad is not None for p in model.parameters())


def test_weights_already_channels_last_stay_so() -> None:
    model = fully_convolutional(2, 1, 2).to(memory_format=torch.channels_last)
    sliding_window(model, torch.randn(1, 9, 9), (8, 8), channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_accumulators_fall_back_to_cpu_when_the_gpu_is_full(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 8000))
    cuda = torch.device("cuda")
    assert accumulator_device(cuda, 400) == cuda
    assert accumulator_device(cuda, 600) == torch.device("cpu")
    assert accumulator_device(torch.device("cpu"), 10**15) == torch.device("cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model = fully_convolutional(3, 1, 3)
    image = torch.randn(1, 40, 36, 33)
    cpu = sliding_window(model, image, (16, 16, 16))
    gpu = sliding_window(model.cuda(), image, (16, 16, 16))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=2e-2)  # autocast: half-precision convolutions


def test_accumulator_device_counts_memory_pytorch_holds_in_its_cache(monkeypatch) -> None:
    """The driver's free memory leaves out blocks PyTorch reserved but does not use: counted."""
    from segcli.inference.sliding_window import accumulator_device

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100, 1000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 500)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 100)
    cuda = torch.device("cuda")
    assert accumulator_device(cuda, 240) == cuda  # half of 100 free + 400 cached
    assert accumulator_device(cuda, 260) == torch.device("cpu")
    assert accumulator_device(torch.device("cpu"), 10**15) == torch.device("cpu")


def test_precision_none_on_cuda_follows_the_auto_rule(monkeypatch) -> None:
    """Library calls without a precision run as the spec's `auto` on CUDA, float32 on CPU."""
    from segcli import precision as prec

    seen = []

    class Choice:
        def autocast(self):
            from contextlib import nullcontext

            return nullcontext()

    monkeypatch.setattr(
        prec, "resolve_precision", lambda name, device: seen.append(name) or Choice()
    )
    prec.inference_autocast(torch.device("cuda"), None)
    prec.inference_autocast(torch.device("cpu"), None)
    assert seen == ["auto"]
