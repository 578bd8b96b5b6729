"""Whole-case prediction in bounded memory (``segcli.inference.volume``) against the float32,
whole-image reference; slab-wise sliding windows against the whole-image accumulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.config import from_dict
from segcli.data.preprocessing import normalize
from segcli.inference import sliding_window
from segcli.inference.decode import decode_labels
from segcli.inference.ensemble import LoadedModel, ensemble_probabilities
from segcli.inference.sliding_window import sliding_window_slabs
from segcli.inference.volume import predict_volume
from segcli.io.images import make_geometry


def experiment(crop: bool = True, multilabel: bool = False, classes: int = 4, **data):
    return from_dict(
        {
            "name": "v",
            "data": {"root": "unused", "patch_size": [6, 8, 8], "crop_nonzero": crop, **data},
            "model": {"arch": "cnn", "dims": 3, "classes": classes, "layers": 1, "filters": 2},
            "multilabel": multilabel,
            "inference": {"patch_size": [6, 8, 8], "batch_size": 3, "precision": "fp32"},
        }
    )


def pointwise(classes: int, seed: int = 0) -> torch.nn.Module:
    """A 1×1×1 convolution: its window probabilities equal the whole image's exactly."""
    torch.manual_seed(seed)
    net = torch.nn.Conv3d(1, classes, 1)
    with torch.no_grad():
        net.weight.mul_(4.0)
    return net.eval()


def image_with_border(shape=(11, 17, 15), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((1, *shape), np.float32)
    image[:, 2:-3, 1:-4, 3:-2] = rng.normal(100, 30, (1, shape[0] - 5, shape[1] - 5, shape[2] - 5))
    return image


def reference_labels(exp, net, image: np.ndarray, crop: bool, multilabel: bool = False):
    """Slow and obvious: crop, normalise the crop, run the network on the whole crop, decode."""
    spatial = image.shape[1:]
    labels = np.zeros(spatial, np.uint8)
    if crop:
        nz = np.argwhere(image[0] != 0)
        lo, hi = nz.min(0), nz.max(0) + 1
    else:
        lo, hi = np.zeros(3, int), np.array(spatial)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    normed = normalize(image[(slice(None), *box)], exp.data.normalization)
    with torch.no_grad():
        logits = net(torch.from_numpy(normed)[None])[0]
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, 0)
    labels[box] = decode_labels(probs.numpy(), multilabel)
    return labels


@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("multilabel", [False, True])
def test_streamed_labels_equal_the_whole_image_reference(crop: bool, multilabel: bool) -> None:
    exp = experiment(crop=crop, multilabel=multilabel)
    net = pointwise(4)
    image = image_with_border()
    model = LoadedModel(path=None, network=net, stats=None)  # type: ignore[arg-type]
    labels, probs = predict_volume(exp, [model], image, "cpu")
    assert probs is None
    np.testing.assert_array_equal(labels, reference_labels(exp, net, image, crop, multilabel))


def test_stored_path_and_ensemble_probabilities_agree_with_the_streamed_labels() -> None:
    exp = experiment()
    image = image_with_border()
    models = [LoadedModel(None, pointwise(4, seed), None) for seed in (0, 1)]  # type: ignore[arg-type]
    labels, probs = predict_volume(exp, models, image, "cpu", probabilities=True)
    assert probs is not None and probs.dtype == np.float16 and probs.shape == (4, *image.shape[1:])
    dense = ensemble_probabilities(exp, models, image, "cpu")
    np.testing.assert_allclose(probs.astype(np.float32), dense, atol=2e-3)
    agree = (labels == dense.argmax(0)).mean()
    assert agree > 0.999  # float16 storage may flip exact near-ties only
    # outside the non-zero box: background with probability 1
    assert labels[0].max() == 0 and (probs[0, 0] == 1).all() and (probs[1:, 0] == 0).all()


def test_a_model_trained_at_another_spacing_returns_the_input_grid() -> None:
    exp = experiment(crop=True, spacing=[2.0, 2.0, 2.0])
    image = image_with_border((12, 20, 18))
    geometry = make_geometry(image.shape[1:], (1.0, 1.0, 1.0), origin=(3.0, 4.0, 5.0))
    model = LoadedModel(None, pointwise(4), None, spacing=(2.0, 2.0, 2.0))  # type: ignore[arg-type]
    labels, _ = predict_volume(exp, [model], image, "cpu", geometry)
    assert labels.shape == image.shape[1:]
    dense = ensemble_probabilities(exp, [model], image, "cpu", geometry)
    assert dense.shape == (4, *image.shape[1:])
    assert (labels == dense.argmax(0)).mean() > 0.99
    # without a geometry the public function still answers on the input's own grid
    assert ensemble_probabilities(exp, [model], image, "cpu").shape == (4, *image.shape[1:])


@settings(max_examples=25, deadline=None)
@given(
    depth=st.integers(3, 20),
    patch=st.integers(2, 8),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
    batch=st.integers(1, 7),
    blend=st.sampled_from(["gaussian", "constant"]),
)
def test_slabs_cover_the_rows_once_in_order_and_equal_the_whole_image(
    depth: int, patch: int, overlap: float, batch: int, blend: str
) -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1).eval()
    image = torch.randn(1, depth, 9)
    whole = sliding_window(net, image, (patch, 5), overlap, blend, batch)
    rows, parts = [], []
    for start, stop, slab in sliding_window_slabs(net, image, (patch, 5), overlap, blend, batch):
        assert stop > start
        rows.append((start, stop))
        parts.append(slab.clone())  # a view into the band, valid until the next slab
    assert rows[0][0] == 0 and rows[-1][1] == depth
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
    torch.testing.assert_close(torch.cat(parts, dim=1), whole)
    # the reference: every window's weighted softmax summed, divided by the summed weights
    from segcli.inference.windows import blend_weights, window_starts

    padded_depth = max(depth, patch)
    assert padded_depth >= patch
    if depth >= patch:
        w = blend_weights((patch, 5), blend)
        acc = torch.zeros(3, depth, 9)
        norm = torch.zeros(depth, 9)
        starts = window_starts((depth, 9), (patch, 5), overlap)
        with torch.no_grad():
            for z in starts[0]:
                for x in starts[1]:
                    window = image[:, z : z + patch, x : x + 5][None]
                    acc[:, z : z + patch, x : x + 5] += torch.softmax(net(window)[0], 0) * w
                    norm[z : z + patch, x : x + 5] += w
        torch.testing.assert_close(whole, acc / norm, atol=1e-5, rtol=1e-4)


def test_a_checkpoint_trained_on_whole_images_is_predicted_on_the_whole_image() -> None:
    """Checkpoints older than data.crop_nonzero saw uncropped cases: predict must not crop
    for them (their normalisation statistics were those of the whole image)."""
    from segcli.io.checkpoint import Checkpoint

    exp = experiment(crop=True)
    raw = exp.model_dump(mode="json")
    old = {**raw, "data": {k: v for k, v in raw["data"].items() if k != "crop_nonzero"}}
    assert not Checkpoint(model={}, spec=old).trained_with_crop
    assert Checkpoint(model={}, spec=raw).trained_with_crop
    net = pointwise(4)
    image = image_with_border()
    model = LoadedModel(None, net, None, crop=False)  # type: ignore[arg-type]
    labels, _ = predict_volume(exp, [model], image, "cpu")
    np.testing.assert_array_equal(labels, reference_labels(exp, net, image, crop=False))
    assert (labels != reference_labels(exp, net, image, crop=True)).any()
