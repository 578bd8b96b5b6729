from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from segcli.padding import pad_amounts, pad_to_shape


@given(
    size=st.lists(st.integers(1, 9), min_size=2, max_size=3),
    extra=st.lists(st.integers(-3, 6), min_size=3, max_size=3),
    mode=st.sampled_from(["minimum", "edge", "reflect", "constant"]),
    use_torch=st.booleans(),
)
def test_pad_then_crop_is_identity(size, extra, mode, use_torch) -> None:
    target = [s + e for s, e in zip(size, extra, strict=False)]
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *size)).astype(np.float32)
    data = torch.from_numpy(image) if use_torch else image
    padded, crop = pad_to_shape(data, target, mode=mode, value=-5.0)
    padded = padded.numpy() if use_torch else padded
    assert padded.shape[1:] == tuple(max(s, t) for s, t in zip(size, target, strict=False))
    np.testing.assert_array_equal(padded[crop], image)


def test_minimum_mode_pads_each_channel_with_its_minimum() -> None:
    image = np.stack([np.full((2, 2), 5.0), np.arange(4.0).reshape(2, 2) - 3]).astype(np.float32)
    padded, _ = pad_to_shape(image, (4, 5), mode="minimum")
    assert padded.shape == (2, 4, 5)
    assert padded[0].min() == 5.0 and padded[1, 0, 0] == -3.0
    t, _ = pad_to_shape(torch.from_numpy(image), (4, 5), mode="minimum")
    np.testing.assert_array_equal(t.numpy(), padded)


def test_padding_is_centred() -> None:
    assert pad_amounts((3, 10), (8, 10)) == [(2, 3), (0, 0)]


def test_constant_and_bad_mode() -> None:
    padded, _ = pad_to_shape(np.ones((1, 1, 1), np.float32), (3, 3), mode="constant", value=-2)
    assert padded[0, 0, 0] == -2 and padded[0, 1, 1] == 1
    with pytest.raises(ValueError, match="pad mode must be one of"):
        pad_to_shape(np.ones((1, 2, 2)), (3, 3), mode="zero")
