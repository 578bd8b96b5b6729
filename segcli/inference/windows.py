"""Where sliding windows go and how much each of their voxels counts (pure functions).

    >>> from segcli.inference.windows import window_starts, gaussian_weights
    >>> window_starts((128, 100), (64, 64), overlap=0.5)
    [[0, 32, 64], [0, 18, 36]]
    >>> gaussian_weights((64, 64)).shape                  # σ = patch/8 per axis, max 1
    torch.Size([64, 64])

Window placement follows nnU-Net's step rule: per axis, the smallest number of windows whose
start-to-start step does not exceed ``floor(patch · (1 − overlap))`` voxels, spread evenly so
that the first starts at 0 and the last ends exactly at the far edge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = [
    "BLEND_MODES",
    "blend_profiles",
    "blend_weights",
    "constant_weights",
    "gaussian_profile",
    "gaussian_weights",
    "max_step",
    "window_starts",
]

#: The values of ``inference.blend``.
BLEND_MODES: tuple[str, ...] = ("gaussian", "constant")

#: Per-axis floor of the gaussian profile: keeps every N-D weight (a product of up to three
#: profiles) a normal float32, so no voxel can end up with zero total weight.
_PROFILE_FLOOR = 1e-10


def max_step(patch: int, overlap: float) -> int:
    """The largest start-to-start step (voxels) that keeps ``overlap`` of a ``patch``-long window.

    ``floor(patch · (1 − overlap))``, but at least 1 (two different windows overlap by at most
    ``patch − 1`` voxels).  A tiny epsilon absorbs float error (``10 · (1 − 0.7)`` is 3, not 2).
    """
    return max(1, math.floor(patch * (1.0 - overlap) + 1e-9))


def _check_overlap(overlap: float) -> None:
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")


def window_starts(
    image_size: Sequence[int], patch_size: Sequence[int], overlap: float
) -> list[list[int]]:
    """Start index of every window along each axis (nnU-Net's step rule).

    Per axis with image length ``n`` and patch length ``p``: ``k = ceil((n − p) / s) + 1``
    windows with ``s = max_step(p, overlap)``, starts ``round(i · (n − p) / (k − 1))``.
    Hence the first start is 0, the last window ends at ``n``, every voxel is covered and
    neighbours overlap by at least ``min(overlap · p, p − 1)`` voxels.  The windows of an
    image are the Cartesian product of the per-axis starts.

    Args:
        image_size: spatial size (voxels per axis); each at least the patch length — pad
            smaller images first (:func:`segcli.padding.pad_to_shape`).
        patch_size: window size per axis, same number of axes.
        overlap: fraction of the patch that neighbours share, in [0, 1).

    Returns:
        One ascending list of start indices per axis.

    Raises:
        ValueError: mismatched axis counts, non-positive sizes, an image axis shorter than the
            patch, or ``overlap`` outside [0, 1).
    """
    _check_overlap(overlap)
    if len(image_size) != len(patch_size):
        raise ValueError(
            f"image_size {tuple(image_size)} and patch_size {tuple(patch_size)} "
            "have different numbers of axes"
        )
    starts: list[list[int]] = []
    for axis, (n, p) in enumerate(zip(image_size, patch_size, strict=True)):
        n, p = int(n), int(p)
        if p <= 0:
            raise ValueError(f"patch_size must be positive, got {tuple(patch_size)}")
        if n < p:
            raise ValueError(
                f"image axis {axis} has {n} voxels, fewer than the patch ({p}); "
                "pad the image to the patch size first"
            )
        span = n - p
        if span == 0:
            starts.append([0])
            continue
        count = -(-span // max_step(p, overlap)) + 1  # ceil division
        # round(i · span / (count − 1)) in integer arithmetic (no banker's rounding)
        starts.append([(2 * i * span + count - 1) // (2 * (count - 1)) for i in range(count)])
    return starts


def gaussian_profile(length: int, sigma_scale: float = 0.125) -> torch.Tensor:
    """1-D gaussian ``exp(−(i − c)² / 2σ²)``, ``c = (length − 1)/2``, ``σ = length · sigma_scale``.

    Centred between voxels for even lengths (as MONAI's importance map), so the profile is
    mirror-symmetric; maximum 1; values floored at 1e-10 so that a product of up to three
    profiles never underflows float32 (the "zeros → smallest positive" rule of nnU-Net and MONAI
    in a form that keeps the weight separable).  Float32, shape ``(length,)``.
    """
    if length <= 0:
        raise ValueError(f"patch length must be positive, got {length}")
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    sigma = length * sigma_scale
    x = torch.arange(length, dtype=torch.float64) - (length - 1) / 2.0
    profile = torch.exp(-(x**2) / (2.0 * sigma**2))
    profile = profile / profile.max()
    return profile.clamp_min(_PROFILE_FLOOR).to(torch.float32)


def blend_profiles(
    patch_size: Sequence[int], blend: str = "gaussian", sigma_scale: float = 0.125
) -> tuple[torch.Tensor, ...]:
    """Per-axis 1-D factors whose outer product is :func:`blend_weights` (float32, CPU)."""
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    if blend == "constant":
        return tuple(torch.ones(int(p)) for p in patch_size)
    return tuple(gaussian_profile(int(p), sigma_scale) for p in patch_size)


def _outer(profiles: Sequence[torch.Tensor]) -> torch.Tensor:
    weights = profiles[0]
    for profile in profiles[1:]:
        weights = weights.unsqueeze(-1) * profile
    return weights.contiguous()


@functools.lru_cache(maxsize=16)
def _gaussian_weights(patch_size: tuple[int, ...], sigma_scale: float) -> torch.Tensor:
    return _outer(blend_profiles(patch_size, "gaussian", sigma_scale))


def gaussian_weights(patch_size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian blend weight of a window: σ = patch · ``sigma_scale`` per axis (nnU-Net: 1/8).

    Built once per (patch size, σ scale) and cached: the returned tensor is shared, treat it as
    read-only.  It is the outer product of :func:`gaussian_profile` per axis: maximum 1 at the
    centre, strictly positive everywhere (≥ 1e-10 per axis).

    Returns:
        float32 CPU tensor of shape ``patch_size``.
    """
    return _gaussian_weights(tuple(int(p) for p in patch_size), float(sigma_scale))


def constant_weights(patch_size: Sequence[int]) -> torch.Tensor:
    """Every voxel of a window counts 1 (plain averaging of overlapping windows)."""
    return torch.ones(tuple(int(p) for p in patch_size))


def blend_weights(patch_size: Sequence[int], blend: str = "gaussian") -> torch.Tensor:
    """The window weight for ``inference.blend`` (``gaussian`` or ``constant``), float32 CPU."""
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    return gaussian_weights(patch_size) if blend == "gaussian" else constant_weights(patch_size)
