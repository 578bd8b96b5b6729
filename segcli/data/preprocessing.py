"""Intensity normalisation, one pure function per scheme (names = ``data.normalization`` values).

>>> normalize(image, "zscore")                    # per volume, per channel
>>> normalize(image, "ct", window=(-160, 240))    # clip to a HU window, scale to [-1, 1]
>>> normalize(image, "ct_auto", stats=stats)      # dataset-level foreground statistics
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["NORMALIZATIONS", "normalize"]

NORMALIZATIONS = ("zscore", "ct", "ct_auto", "minmax", "none")


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
    if scheme == "none":
        return image
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        channel = image[c]
        if scheme == "zscore":
            mean, std = float(channel.mean(dtype=np.float64)), float(channel.std(dtype=np.float64))
            out[c] = (channel - mean) / max(std, 1e-8)
        elif scheme == "minmax":
            lo, hi = float(channel.min()), float(channel.max())
            out[c] = (channel - lo) / (hi - lo) if hi > lo else 0.0
        elif scheme == "ct":
            lo, hi = float(window[0]), float(window[1])
            out[c] = (np.clip(channel, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
        elif scheme == "ct_auto":
            if stats is None:
                raise ValueError("normalization 'ct_auto' needs dataset statistics (stats=...)")
            lo, hi = float(stats["low"][c]), float(stats["high"][c])
            mean, std = float(stats["mean"][c]), float(stats["std"][c])
            out[c] = (np.clip(channel, lo, hi) - mean) / max(std, 1e-8)
        else:
            raise ValueError(f"unknown normalization {scheme!r}; choose one of {NORMALIZATIONS}")
    return out
