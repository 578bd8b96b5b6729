"""nnU-Net's intensity transforms do what they say: statistics, references, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcli.data.augment import (
    RandomBlur,
    RandomBrightness,
    RandomContrast,
    RandomFlip,
    RandomGamma,
    RandomLowResolution,
    RandomNoise,
)
from segcli.data.augment._common import split_uniform
from segcli.data.augment.intensity import gamma_map

RNG = np.random.default_rng(0)
IMAGE = RNG.normal(size=(2, 24, 28, 20)).astype(np.float32)
LABEL = RNG.integers(0, 3, size=(24, 28, 20)).astype(np.uint8)

ALL = [
    RandomNoise(1.0),
    RandomBlur(1.0, channel_probability=1.0),
    RandomBrightness(1.0),
    RandomContrast(1.0),
    RandomGamma(1.0),
    RandomGamma(1.0, inverted=True),
    RandomLowResolution(1.0, zoom=(0.5, 0.6), channel_probability=1.0),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_probability_one_changes_every_channel_zero_nothing_and_the_label_never(transform):
    image = IMAGE.copy()
    out, label = transform(image, LABEL, np.random.default_rng(1))
    assert label is LABEL and out.shape == IMAGE.shape and out.dtype == np.float32
    assert all(not np.allclose(out[c], IMAGE[c]) for c in range(2))
    np.testing.assert_array_equal(image, IMAGE)  # the input is not changed in place
    off = type(transform)(**{**transform.__dict__, "probability": 0.0})
    same, _ = off(IMAGE, LABEL, np.random.default_rng(1))
    assert same is IMAGE
    none = type(transform)(**{**transform.__dict__, "channel_probability": 0.0})
    unchanged, _ = none(IMAGE, LABEL, np.random.default_rng(1))
    np.testing.assert_array_equal(unchanged, IMAGE)


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_a_seed_gives_one_result_and_the_probability_holds(transform) -> None:
    a, _ = transform(IMAGE, LABEL, np.random.default_rng(7))
    b, _ = transform(IMAGE, LABEL, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    small = IMAGE[:, :4, :4, :4]
    half = type(transform)(**{**transform.__dict__, "probability": 0.3})
    rng = np.random.default_rng(0)
    fired = np.mean([half(small, LABEL, rng)[0] is not small for _ in range(800)])
    assert fired == pytest.approx(0.3, abs=0.05)


def test_noise_has_the_drawn_standard_deviation() -> None:
    flat = np.zeros((1, 64, 64, 64), np.float32)
    out, _ = RandomNoise(1.0, std=(0.3, 0.3))(flat, LABEL, np.random.default_rng(0))
    assert out.mean() == pytest.approx(0.0, abs=0.003)
    assert out.std() == pytest.approx(0.3, rel=0.01)
    stds = [
        RandomNoise(1.0, std=(0.0, 0.1))(flat[:, :16], LABEL, np.random.default_rng(s))[0].std()
        for s in range(200)
    ]
    assert 0 <= min(stds) < 0.01 and 0.09 < max(stds) <= 0.1 + 1e-3  # uniform over the range


def test_blur_is_scipys_gaussian_filter_and_spares_the_coarse_axis() -> None:
    blur = RandomBlur(1.0, sigma=(0.8, 0.8), channel_probability=1.0)
    out, _ = blur(IMAGE, LABEL, np.random.default_rng(0))
    for c in range(2):
        np.testing.assert_allclose(out[c], ndimage.gaussian_filter(IMAGE[c], 0.8), atol=1e-6)
    aniso = RandomBlur(1.0, sigma=(0.8, 0.8), channel_probability=1.0, coarse_axis=0)
    out, _ = aniso(IMAGE, LABEL, np.random.default_rng(0))
    np.testing.assert_allclose(out[0], ndimage.gaussian_filter(IMAGE[0], (0, 0.8, 0.8)), atol=1e-6)


def test_brightness_multiplies_by_one_factor_per_channel() -> None:
    factors = []
    for seed in range(300):
        out, _ = RandomBrightness(1.0, factor=(0.7, 1.5))(IMAGE, LABEL, np.random.default_rng(seed))
        ratio = out / IMAGE
        for c in range(2):
            np.testing.assert_allclose(ratio[c], ratio[c].flat[0], rtol=1e-5)
            factors.append(float(ratio[c].flat[0]))
    factors = np.array(factors)
    assert factors.min() >= 0.7 - 1e-5 and factors.max() <= 1.5 + 1e-5
    # nnU-Net's draw: below 1 as often as above, though 1 is not the middle of [0.7, 1.5]
    assert np.mean(factors < 1) == pytest.approx(0.5, abs=0.05)


def test_contrast_scales_about_the_mean_and_keeps_the_range() -> None:
    for seed in range(20):
        out, _ = RandomContrast(1.0)(IMAGE, LABEL, np.random.default_rng(seed))
        for c in range(2):
            x, y = IMAGE[c], out[c]
            assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
            inside = (y > x.min() + 1e-4) & (y < x.max() - 1e-4)  # not clipped
            slope = np.polyfit(x[inside], y[inside], 1)[0]
            assert 0.75 - 1e-3 <= slope <= 1.25 + 1e-3
            centre = np.argmin(np.abs(x - x.mean()))
            assert y.flat[centre] == pytest.approx(x.flat[centre], abs=1e-2)


@settings(max_examples=40, deadline=None)
@given(gamma=st.floats(0.2, 5.0), seed=st.integers(0, 1000))
def test_gamma_map_is_increasing_and_keeps_the_range(gamma: float, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=200).astype(np.float32) * 3 + 1
    y = gamma_map(x.copy(), gamma)
    order = np.argsort(x)
    assert np.all(np.diff(y[order]) >= -1e-5)
    assert y.min() == pytest.approx(x.min(), abs=1e-5)
    assert y.max() == pytest.approx(x.max(), abs=1e-4)


@pytest.mark.parametrize("inverted", [False, True])
def test_gamma_keeps_order_mean_and_std_and_bends_the_right_end(inverted: bool) -> None:
    x = np.linspace(-2, 3, 501, dtype=np.float32)[None]
    gamma = RandomGamma(1.0, gamma=(2.0, 2.0), inverted=inverted)
    out, _ = gamma(x, LABEL, np.random.default_rng(0))
    assert np.all(np.diff(out[0]) > 0)  # increasing either way
    assert out.mean() == pytest.approx(x.mean(), abs=1e-4)
    assert out.std() == pytest.approx(x.std(), rel=1e-4)
    # gamma 2 is convex on the plain image (steepest at the bright end); inverted, concave
    slopes = np.diff(out[0])
    assert (slopes[-1] > slopes[0]) != inverted


def test_low_resolution_removes_high_frequencies_keeps_smooth_content_and_the_coarse_axis():
    z, y, x = np.meshgrid(*[np.arange(s) for s in (8, 32, 32)], indexing="ij")
    checker = ((y + x) % 2).astype(np.float32) * 2 - 1  # the highest frequency in-plane
    ramp = (x / 31.0).astype(np.float32)
    image = np.stack([checker + z, ramp])
    low = RandomLowResolution(1.0, zoom=(0.5, 0.5), channel_probability=1.0, coarse_axis=0)
    out, _ = low(image, LABEL, np.random.default_rng(0))

    def high_energy(a: np.ndarray) -> float:
        spectrum = np.abs(np.fft.fftn(a - a.mean(axis=(1, 2), keepdims=True), axes=(1, 2)))
        return float(spectrum[:, 8:-8, 8:-8].sum())

    assert high_energy(out[0]) < 0.1 * high_energy(image[0])
    np.testing.assert_allclose(out[1], image[1], atol=0.05)  # a ramp survives
    # the coarse axis keeps its resolution: slice k still differs from slice 0 by k (the
    # checkerboard itself aliases to a constant, as nearest downsampling does)
    means = out[0].mean(axis=(1, 2))
    np.testing.assert_allclose(means - means[0], np.arange(8), atol=1e-5)


def test_mirroring_per_axis() -> None:
    image, label = IMAGE[:, :5, :6, :7], LABEL[:5, :6, :7]
    out, out_label = RandomFlip(1.0, axes=(1,))(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_label, label[:, ::-1])
    np.testing.assert_array_equal(out, image[:, :, ::-1])
    subsets = [(), (0,), (2,), (0, 2)]
    seen = set()
    for seed in range(40):
        _, out_label = RandomFlip(0.5, axes=(0, 2))(image, label, np.random.default_rng(seed))
        match = [s for s in subsets if np.array_equal(out_label, np.flip(label, s))]
        assert match, "a flip outside axes 0 and 2"
        seen.add(match[0])
    assert seen == set(subsets)


@settings(max_examples=30, deadline=None)
@given(low=st.floats(0.1, 2.0), width=st.floats(0.0, 2.0), seed=st.integers(0, 1000))
def test_split_uniform_stays_in_the_range(low: float, width: float, seed: int) -> None:
    value = split_uniform(np.random.default_rng(seed), low, low + width)
    assert low <= value <= low + width
