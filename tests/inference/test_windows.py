"""Window placement and blend weights (segcli/inference/windows.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.inference.windows import (
    blend_weights,
    constant_weights,
    gaussian_profile,
    gaussian_weights,
    max_step,
    window_starts,
)


@st.composite
def axis_and_overlap(draw: st.DrawFn) -> tuple[int, int, float]:
    patch = draw(st.integers(1, 40))
    size = draw(st.integers(patch, 200))
    overlap = draw(st.floats(0.0, 0.99))
    return size, patch, overlap


@settings(max_examples=300, deadline=None)
@given(axis_and_overlap())
def test_starts_cover_every_voxel_from_0_to_the_far_edge(case: tuple[int, int, float]) -> None:
    size, patch, overlap = case
    (starts,) = window_starts([size], [patch], overlap)
    assert starts[0] == 0
    assert starts[-1] + patch == size
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))  # strictly increasing
    covered = np.zeros(size, dtype=int)
    for s in starts:
        covered[s : s + patch] += 1
    assert covered.min() >= 1
    # neighbours share at least overlap · patch voxels (two distinct windows: at most patch − 1)
    need = min(overlap * patch, patch - 1)
    for a, b in zip(starts, starts[1:], strict=False):
        assert patch - (b - a) >= need - 1e-9


@settings(max_examples=200, deadline=None)
@given(axis_and_overlap())
def test_no_window_is_superfluous(case: tuple[int, int, float]) -> None:
    # one window fewer could not span the image with steps of at most max_step
    size, patch, overlap = case
    (starts,) = window_starts([size], [patch], overlap)
    assert (len(starts) - 2) * max_step(patch, overlap) < size - patch or len(starts) == 1


def test_known_placements() -> None:
    # hand-derived: 128 with 64 at 50 % → step 32; 100 → 3 windows spread over 36 voxels
    assert window_starts((128, 100), (64, 64), 0.5) == [[0, 32, 64], [0, 18, 36]]
    assert window_starts([10], [4], 0.5) == [[0, 2, 4, 6]]
    assert window_starts([10], [4], 0.0) == [[0, 3, 6]]  # 3 windows, spread: overlap grows
    assert window_starts([7, 5, 9], [7, 5, 3], 0.25) == [[0], [0], [0, 2, 4, 6]]


def test_float_error_in_the_step_is_absorbed() -> None:
    # 10 · (1 − 0.7) = 3.0000000000000004 and 10 · (1 − 0.3) = 6.999999999999999 in floats
    assert max_step(10, 0.7) == 3
    assert max_step(10, 0.3) == 7
    assert max_step(4, 0.9) == 1  # never 0


@pytest.mark.parametrize(
    ("size", "patch", "overlap", "message"),
    [
        ([10], [4], 1.0, "overlap must be in"),
        ([10], [4], -0.1, "overlap must be in"),
        ([3], [4], 0.5, "pad the image"),
        ([10, 10], [4], 0.5, "different numbers of axes"),
        ([10], [0], 0.5, "patch_size must be positive"),
    ],
)
def test_invalid_arguments_raise(size, patch, overlap, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        window_starts(size, patch, overlap)


@pytest.mark.parametrize("patch", [(9,), (8, 7), (6, 9, 5), (64, 64, 64)])
def test_gaussian_weights_shape_peak_symmetry_positivity(patch: tuple[int, ...]) -> None:
    w = gaussian_weights(patch)
    assert w.shape == patch and w.dtype == torch.float32
    assert math.isclose(float(w.max()), 1.0, rel_tol=1e-6)
    assert float(w.min()) > 0
    for axis in range(len(patch)):
        assert torch.equal(w, w.flip(axis))  # centred at (p − 1)/2: mirror-symmetric


def test_gaussian_sigma_is_patch_over_8() -> None:
    p = 17  # odd: a voxel sits exactly at the centre; σ = 17/8
    profile = gaussian_profile(p).double()
    x = np.arange(p) - 8
    expected = np.exp(-(x**2) / (2 * (p / 8) ** 2))
    assert np.allclose(profile.numpy(), expected, rtol=1e-6)
    w = gaussian_weights((p, p)).double()
    assert torch.allclose(w, profile[:, None] * profile[None, :], rtol=1e-6)


def test_gaussian_weights_are_cached_and_sigma_scale_matters() -> None:
    assert gaussian_weights([12, 12]) is gaussian_weights((12, 12))
    wide, narrow = gaussian_weights((12,), 0.5), gaussian_weights((12,), 0.05)
    assert float(wide[0]) > float(narrow[0])


def test_tiny_sigma_never_gives_zero_weight() -> None:
    w = gaussian_weights((64, 64, 64), sigma_scale=0.01)  # exp(−(31.5/0.64)²/2) underflows
    assert float(w.min()) > 0 and torch.isfinite(1 / w).all()


def test_constant_and_dispatch() -> None:
    assert torch.equal(constant_weights((3, 4)), torch.ones(3, 4))
    assert torch.equal(blend_weights((3, 4), "constant"), torch.ones(3, 4))
    assert blend_weights((5, 5), "gaussian") is gaussian_weights((5, 5))
    with pytest.raises(ValueError, match="blend must be one of gaussian, constant"):
        blend_weights((5, 5), "linear")
