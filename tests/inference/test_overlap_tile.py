"""Overlap-tile inference for valid-padding networks (lecture claim 8, issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.config.schema import PatchCNNSpec, UNetSpec
from segcli.inference import sliding_window
from segcli.inference.overlap_tile import (
    mirror_indices,
    mirror_pad,
    overlap_tile,
    predict_probabilities,
    tile_geometry,
    tile_starts,
)
from segcli.io.checkpoint import save_checkpoint
from segcli.io.images import make_geometry, read_geometry, read_label, write_image
from segcli.models import build


def valid_unet(
    dims: int = 2, depth: int = 3, filters: int = 4, gain: float = 2.0
) -> torch.nn.Module:
    """A valid-padding U-Net whose weights are scaled so its output varies visibly in space."""
    torch.manual_seed(0)
    net = build(UNetSpec(dims=dims, filters=filters, depth=depth, padding="valid", norm="none"))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return net.eval()


# --------------------------------------------------------------------------- pure functions


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 12), before=st.integers(0, 40), after=st.integers(0, 40))
def test_mirror_indices_equal_numpy_reflect_for_any_pad_length(
    length: int, before: int, after: int
) -> None:
    expected = np.pad(np.arange(length), (before, after), mode="reflect")
    np.testing.assert_array_equal(mirror_indices(length, before, after), expected)


def test_mirror_pad_pads_every_axis_like_numpy() -> None:
    image = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    got = mirror_pad(image, (4, 1), (7, 0))
    want = np.pad(image.numpy(), ((0, 0), (4, 7), (1, 0)), mode="reflect")
    np.testing.assert_array_equal(got.numpy(), want)


def test_tile_starts_tile_the_axis_exactly_once() -> None:
    assert tile_starts(37, 16) == [0, 16, 32]
    assert tile_starts(32, 16) == [0, 16]
    assert tile_starts(5, 16) == [0]


def test_geometry_of_the_2015_unet_is_the_papers() -> None:
    spec = load(Path(__file__).parents[2] / "experiments" / "unet-2015.yaml").model
    with torch.device("meta"):
        net = build(spec)
    geo = tile_geometry(net, (572, 572))
    assert geo.network_output == (388, 388)  # the paper's Fig. 2
    assert geo.border_before == geo.border_after == (92, 92)
    assert geo.stride == (16, 16)
    assert geo.output_tile == (384, 384)  # the largest multiple of 16 within 388


# --------------------------------------------------------------------------- the claim


def test_prediction_does_not_depend_on_the_tile_size() -> None:
    net = valid_unet()
    image = torch.randn(1, 61, 47)
    results = [overlap_tile(net, image, p) for p in [(100, 100), (108, 116), (124, 100)]]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], atol=1e-5, rtol=0)


def test_without_stride_alignment_the_result_depends_on_the_tiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The negative control: tiles not aligned to the 8-voxel stride give another answer."""
    import segcli.inference.overlap_tile as module

    net = valid_unet()
    image = torch.randn(1, 61, 47)
    monkeypatch.setattr(module, "_graph_stride", lambda model, dims: (1,) * dims)
    a = overlap_tile(net, image, (108, 108))  # 20-voxel tiles
    b = overlap_tile(net, image, (100, 100))  # 12-voxel tiles
    assert (a - b).abs().max() > 1e-3


def whole_image_reference(net: torch.nn.Module, image: torch.Tensor, border: int) -> torch.Tensor:
    """The network run once on the whole image, mirror-padded with NumPy, then cropped."""
    dims = image.ndim - 1
    graph = net.field_graph()

    def accepted(size: int) -> bool:
        try:
            graph.sizes((size,) * dims)
        except ValueError:
            return False
        return True

    pads = []
    for n in image.shape[1:]:
        size = n + 2 * border  # grow the far end until the network accepts the size
        while not accepted(size):
            size += 1
        pads.append((border, size - n - border))
    padded = np.pad(image.numpy(), ((0, 0), *pads), mode="reflect")
    with torch.no_grad():
        logits = net(torch.from_numpy(padded)[None])[0]
    crop = (slice(None), *(slice(0, n) for n in image.shape[1:]))
    assert logits.ndim == dims + 1
    return torch.softmax(logits, 0)[crop]


@pytest.mark.parametrize(
    ("dims", "shape", "patch"),
    [(2, (37, 23), (100, 108)), (2, (61, 9), (100, 100)), (3, (13, 21, 9), (44, 48, 52))],
)
def test_geometry_is_the_inputs_and_values_equal_the_whole_image_run(
    dims: int, shape: tuple[int, ...], patch: tuple[int, ...]
) -> None:
    depth = 3 if dims == 2 else 2
    net = valid_unet(dims, depth=depth, filters=4 if dims == 2 else 2)
    image = torch.randn(1, *shape)
    probs = overlap_tile(net, image, patch, batch_size=3)
    assert probs.shape == (2, *shape)
    border = tile_geometry(net, patch).border_before[0]
    reference = whole_image_reference(net, image, border)
    torch.testing.assert_close(probs, reference, atol=1e-5, rtol=0)
    assert probs[1].std() > 0.01  # a varying map: the comparison is not between two constants


def test_mirror_tta_and_batching_keep_the_shape_and_stay_probabilities() -> None:
    net = valid_unet(depth=2)
    image = torch.randn(1, 29, 30)
    plain = overlap_tile(net, image, (60, 60), batch_size=1)
    batched = overlap_tile(net, image, (60, 60), batch_size=5)
    torch.testing.assert_close(plain, batched, atol=1e-6, rtol=0)
    tta = overlap_tile(net, image, (60, 60), tta=True)
    assert tta.shape == plain.shape
    torch.testing.assert_close(tta.sum(0), torch.ones(29, 30), atol=1e-5, rtol=0)
    assert not torch.allclose(tta, plain, atol=1e-4)  # the flips were really run


def test_strided_window_classifier_is_refused() -> None:
    net = build(PatchCNNSpec(filters=2, hidden=3, mode="window")).eval()
    with pytest.raises(ValueError, match="one prediction per input voxel"):
        tile_geometry(net, (111, 111))


def test_same_padding_networks_keep_sliding_windows() -> None:
    torch.manual_seed(0)
    net = build(UNetSpec(filters=2, depth=2)).eval()
    image = torch.randn(1, 21, 18)
    got = predict_probabilities(net, image, (16, 16), overlap=0.25, blend="constant")
    want = sliding_window(net, image, (16, 16), overlap=0.25, blend="constant")
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- the CLI


def test_predict_runs_a_valid_unet_on_images_of_any_size(tmp_path: Path) -> None:
    raw = {
        "name": "valid",
        "data": {"root": str(tmp_path / "unused"), "patch_size": [44, 44]},
        "model": {"arch": "unet", "dims": 2, "filters": 2, "depth": 2, "padding": "valid"},
        "inference": {"batch_size": 2},
        "output": str(tmp_path / "runs"),
    }
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(raw))
    exp = load(spec)
    torch.manual_seed(0)
    state = {"model": build(exp.model).state_dict(), "spec": exp.model_dump(mode="json")}
    save_checkpoint(tmp_path / "runs" / "valid" / "checkpoint_best.pt", {**state, "epoch": 0})
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name, size in (("odd", (13, 7)), ("big", (51, 40))):
        geometry = make_geometry(size, (0.7, 2.0), (5.0, -3.0), (1.0, 0.0, 0.0, 1.0))
        write_image(
            images / f"{name}_0000.nii.gz", rng.normal(size=size).astype(np.float32), geometry
        )
    out = tmp_path / "pred"
    args = ["predict", str(spec), "--input", str(images), "--output", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name, size in (("odd", (13, 7)), ("big", (51, 40))):
        assert read_geometry(out / f"{name}.nii.gz") == read_geometry(
            images / f"{name}_0000.nii.gz"
        )
        assert read_label(out / f"{name}.nii.gz")[0].shape == size


def test_a_valid_unet_trains_with_validation_by_overlap_tile(toy2d: Path, tmp_path: Path) -> None:
    from segcli.config.loader import from_dict
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit
    from tests.conftest import tiny_spec

    raw = tiny_spec(
        toy2d,
        data={"patch_size": [44, 44]},
        train={"epochs": 1, "iterations_per_epoch": 2},
        output=str(tmp_path / "runs"),
    )
    raw["model"] = {"arch": "unet", "dims": 2, "filters": 2, "depth": 2, "padding": "valid"}
    set_quiet(True)
    result = fit(from_dict(raw), device="cpu")
    assert 0.0 <= result.rows[-1]["val_dice"] <= 1.0  # validation ran on whole 32×32 cases


def test_anisotropic_strides_align_per_axis() -> None:
    """Per-axis pooling (model.strides): the tiles follow each axis's own total stride."""
    torch.manual_seed(0)
    spec = UNetSpec(filters=3, depth=2, strides=[[1, 2], [2, 2]], padding="valid", norm="none")
    net = build(spec).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
    geo = tile_geometry(net, (60, 60))
    assert geo.stride == (2, 4)
    image = torch.randn(1, 29, 33)
    a = overlap_tile(net, image, (60, 60))
    b = overlap_tile(net, image, (64, 68))
    assert a.shape == (2, 29, 33)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def tta_reference(
    net: torch.nn.Module, image: torch.Tensor, patch: tuple[int, ...]
) -> torch.Tensor:
    """Slow and obvious overlap-tile with mirror TTA: every output tile from its mirror-padded
    input window, each flip run, flipped back and averaged, the first T voxels kept."""
    import itertools
    import math

    geo = tile_geometry(net, patch)
    spatial = image.shape[1:]
    T, P, b = geo.output_tile, geo.input_tile, geo.border_before
    axes = [a for a in range(len(spatial)) if geo.border_before[a] == geo.border_after[a]]
    flips = [
        c for k in range(len(axes) + 1) for c in itertools.combinations([1 + a for a in axes], k)
    ]
    pads = [(b[a], math.ceil(n / T[a]) * T[a] + P[a] - b[a] - n) for a, n in enumerate(spatial)]
    assert all(max(p) < n for p, n in zip(pads, spatial, strict=True))  # one reflection suffices
    padded = torch.from_numpy(np.pad(image.numpy(), ((0, 0), *pads), mode="reflect"))
    out = None
    starts = [range(0, n, t) for n, t in zip(spatial, T, strict=True)]
    with torch.no_grad():
        for corner in itertools.product(*starts):
            window = padded[
                (slice(None), *(slice(c, c + p) for c, p in zip(corner, P, strict=True)))
            ]
            total = 0
            for f in flips:
                x = window.flip([a for a in f]) if f else window
                probs = torch.softmax(net(x[None])[0], 0)
                total = total + (probs.flip([a for a in f]) if f else probs)
            probs = total / len(flips)
            if out is None:
                out = torch.zeros(probs.shape[0], *(c for c in spatial))
            keep = tuple(
                slice(0, min(t, n - c)) for t, n, c in zip(T, spatial, corner, strict=True)
            )
            target = tuple(slice(c, c + k.stop) for c, k in zip(corner, keep, strict=True))
            out[(slice(None), *target)] = probs[(slice(None), *keep)]
    assert out is not None
    return out


def test_mirror_tta_equals_the_slow_reference() -> None:
    net = valid_unet(depth=2)
    image = torch.randn(1, 70, 66, generator=torch.Generator().manual_seed(3))
    got = overlap_tile(net, image, (60, 60), tta=True, batch_size=2)
    torch.testing.assert_close(got, tta_reference(net, image, (60, 60)), atol=1e-5, rtol=0)
