"""Ciresan's sliding-window classifier against the dense network with the same weights."""

from __future__ import annotations

import pytest
import torch

from segcli.config.schema import PatchCNNSpec
from segcli.inference.patch_classifier import classify_every_pixel
from segcli.models import build


def pair(spec: PatchCNNSpec) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The dense network and the window classifier sharing one set of weights."""
    torch.manual_seed(0)
    dense = build(spec.model_copy(update={"mode": "dense"})).eval()
    window = build(spec.model_copy(update={"mode": "window"})).eval()
    window.load_state_dict(dense.state_dict())
    return dense, window


def test_lecture_window_classifier_equals_the_dense_network_in_float32() -> None:
    """The lecture's 95×95 window (kernels 4, 5, 4, 4; four poolings), slim widths."""
    dense, window = pair(PatchCNNSpec(filters=4, hidden=8))
    image = torch.randn(1, 21, 17)
    with torch.no_grad():
        expected = dense(image[None])[0]
    got = classify_every_pixel(window, image, 95, batch_size=64)
    assert got.shape == expected.shape == (2, 21, 17)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert expected[1].std() > 1e-3  # the map varies: not two constants compared


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect", "replicate"])
def test_3d_window_classifier_equals_the_dense_network(pad_mode: str) -> None:
    spec = PatchCNNSpec(
        dims=3, filters=2, hidden=3, input_size=19, kernel_sizes=[2, 2], pad_mode=pad_mode
    )
    dense, window = pair(spec)
    image = torch.randn(1, 11, 10, 12)
    with torch.no_grad():
        expected = dense(image[None])[0]
    got = classify_every_pixel(window, image, 19, pad_mode=pad_mode)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_dense_network_is_not_a_window_classifier() -> None:
    dense, _ = pair(PatchCNNSpec(filters=2, hidden=3, input_size=19, kernel_sizes=[2, 2]))
    with pytest.raises(ValueError, match="one output per window"):
        classify_every_pixel(dense, torch.randn(1, 4, 4), 19)
