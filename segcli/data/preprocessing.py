"""Preprocessing of one case: crop to the nonzero region, intensity normalisation.

>>> normalize(image, "zscore")                    # per volume, per channel
>>> normalize(image, "ct", window=(-160, 240))    # clip to a HU window, scale to [-1, 1]
>>> normalize(image, "ct_auto", stats=stats)      # dataset-level foreground statistics
>>> box = nonzero_bbox(image)                     # nnU-Net's crop: where any channel is non-zero

Every scheme is, per channel, ``(clip(x, low, high) - shift) / scale``: :func:`channel_affine`
returns those four numbers from a volume's own statistics (:class:`ChannelStats`), so a volume
can be normalised patch by patch (the preprocessing cache stores raw intensities and each
case's statistics) with exactly the arithmetic of normalising it whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from segcli.io.images import ImageGeometry

__all__ = [
    "NORMALIZATIONS",
    "ChannelStats",
    "channel_affine",
    "crop_geometry",
    "nonzero_bbox",
    "normalize",
    "normalize_with",
]

NORMALIZATIONS = ("zscore", "ct", "ct_auto", "minmax", "none")


@dataclass(frozen=True)
class ChannelStats:
    """A volume's own intensity statistics, one value per channel (float64 arithmetic)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]

    @classmethod
    def of(cls, image: npt.NDArray[np.floating]) -> ChannelStats:
        """Statistics of ``image`` ``(C, *spatial)``."""
        flat = [np.asarray(image[c], dtype=np.float32) for c in range(image.shape[0])]
        return cls(
            tuple(float(c.mean(dtype=np.float64)) for c in flat),
            tuple(float(c.std(dtype=np.float64)) for c in flat),
            tuple(float(c.min()) if c.size else 0.0 for c in flat),
            tuple(float(c.max()) if c.size else 0.0 for c in flat),
        )

    def as_dict(self) -> dict[str, list[float]]:
        return {k: list(getattr(self, k)) for k in ("mean", "std", "min", "max")}


def channel_affine(
    scheme: str,
    channel: int,
    own: ChannelStats,
    window: Sequence[float] = (-1000.0, 1000.0),
    stats: Mapping[str, Sequence[float]] | None = None,
) -> tuple[float, float, float, float]:
    """``(low, high, shift, scale)`` of one channel: normalised = ``(clip(x) - shift) / scale``.

    ``low``/``high`` are ±inf where the scheme does not clip; ``scale`` is inf for a constant
    volume under ``minmax`` (which maps it to zeros, never NaN).

    Raises:
        ValueError: unknown scheme, or ``ct_auto`` without ``stats``.
    """
    inf = float("inf")
    if scheme == "none":
        return -inf, inf, 0.0, 1.0
    if scheme == "zscore":
        return -inf, inf, own.mean[channel], max(own.std[channel], 1e-8)
    if scheme == "minmax":
        lo, hi = own.min[channel], own.max[channel]
        return -inf, inf, lo, (hi - lo) if hi > lo else inf
    if scheme == "ct":
        lo, hi = float(window[0]), float(window[1])
        return lo, hi, (lo + hi) / 2.0, (hi - lo) / 2.0
    if scheme == "ct_auto":
        if stats is None:
            raise ValueError("normalization 'ct_auto' needs dataset statistics (stats=...)")
        return (
            float(stats["low"][channel]),
            float(stats["high"][channel]),
            float(stats["mean"][channel]),
            max(float(stats["std"][channel]), 1e-8),
        )
    raise ValueError(f"unknown normalization {scheme!r}; choose one of {NORMALIZATIONS}")


def normalize_with(
    image: npt.NDArray[np.floating],
    scheme: str,
    own: ChannelStats,
    window: Sequence[float] = (-1000.0, 1000.0),
    stats: Mapping[str, Sequence[float]] | None = None,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Normalise ``image`` ``(C, *spatial)`` (a whole volume or any part of it) with the
    statistics ``own`` of the whole volume it comes from; see :func:`normalize`.

    ``out`` may be ``image`` itself (float32) to normalise in place.
    """
    if out is None:
        out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        low, high, shift, scale = channel_affine(scheme, c, own, window, stats)
        channel = np.asarray(image[c], dtype=np.float32)
        if np.isfinite(low) or np.isfinite(high):
            np.clip(channel, np.float32(low), np.float32(high), out=out[c])
            channel = out[c]
        np.subtract(channel, np.float32(shift), out=out[c])
        out[c] /= np.float32(scale)
    return out


def normalize(
    image: npt.NDArray[np.floating],
    scheme: str,
    window: Sequence[float] = (-1000.0, 1000.0),
    stats: Mapping[str, Sequence[float]] | None = None,
) -> npt.NDArray[np.float32]:
    """Normalise a (C, *spatial) image channel by channel.

    Args:
        image: float array, channel first.
        scheme: ``zscore`` (mean 0, std 1 per volume), ``ct`` (clip to ``window``, scale to
            [-1, 1]), ``ct_auto`` (clip to dataset percentiles, z-score with dataset foreground
            mean/std from ``stats``), ``minmax`` ([0, 1] per volume) or ``none``.
        window: (low, high) for ``ct``.
        stats: for ``ct_auto``: lists ``low``, ``high``, ``mean``, ``std`` with one value per channel.

    Returns:
        float32 array of the same shape.  Constant images map to zeros (never NaN).
    """
    image = np.asarray(image, dtype=np.float32)
    if scheme not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {scheme!r}; choose one of {NORMALIZATIONS}")
    if scheme == "none":
        return image
    return normalize_with(image, scheme, ChannelStats.of(image), window, stats)


def nonzero_bbox(image: npt.NDArray[np.generic]) -> tuple[tuple[int, int], ...]:
    """nnU-Net's crop: the bounding box ``((start, stop), ...)`` per spatial axis of the voxels
    where any channel of ``image`` ``(C, *spatial)`` is non-zero; the whole image when none is.
    """
    spatial = image.shape[1:]
    mask = np.any(np.asarray(image) != 0, axis=0)
    box = []
    for axis in range(len(spatial)):
        others = tuple(a for a in range(len(spatial)) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others) if others else mask)
        if hit.size == 0:
            return tuple((0, int(s)) for s in spatial)
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def crop_geometry(geometry: ImageGeometry, box: Sequence[tuple[int, int]]) -> ImageGeometry:
    """The grid of ``geometry`` restricted to ``box`` (array axis order): same spacing and
    direction, the origin moved to the box's first voxel."""
    from segcli.io.images import index_to_physical

    origin = tuple(float(v) for v in index_to_physical(geometry, [b[0] for b in box]))
    size = tuple(int(b[1] - b[0]) for b in box)
    return replace(geometry, size=size, origin=origin)
