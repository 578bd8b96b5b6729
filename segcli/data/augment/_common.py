"""What the augmentation modules share: array types, the anisotropy rule, nnU-Net's draws."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Image", "Label", "channels_to_change", "coarse_axis", "owned", "split_uniform"]

Image = npt.NDArray[np.floating]
Label = npt.NDArray[np.integer]


def coarse_axis(spacing: Sequence[float] | None) -> int | None:
    """The thick-slice axis of anisotropic data, or None.

    nnU-Net's rule (:data:`segcli.data.resample.ANISOTROPY_THRESHOLD`): the largest spacing
    more than 3 times the smallest.  Spatial transforms then act in the other axes only (the
    coarse axis keeps its slices: nothing is interpolated or rotated across them), as do the
    blur and the low-resolution simulation.
    """
    if spacing is None or len(spacing) < 2:
        return None
    from segcli.data.resample import ANISOTROPY_THRESHOLD

    values = np.asarray(spacing, dtype=np.float64)
    if values.max() > ANISOTROPY_THRESHOLD * values.min():
        return int(np.argmax(values))
    return None


def split_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor from ``[low, high]``; when the range straddles 1, below and above 1 equally
    often (nnU-Net's draw for brightness, contrast and gamma: 0.7 to 1.5 darkens as often as it
    brightens), else uniform."""
    if low < 1.0 < high:
        if rng.random() < 0.5:
            return float(rng.uniform(low, 1.0))
        return float(rng.uniform(1.0, high))
    return float(rng.uniform(low, high))


def channels_to_change(rng: np.random.Generator, channels: int, probability: float) -> list[int]:
    """The channels a fired intensity transform changes: each with ``probability``."""
    return [int(c) for c in np.flatnonzero(rng.random(channels) < probability)]


def owned(image: Image) -> npt.NDArray[np.float32]:
    """A float32 copy of ``image`` that a transform may change in place."""
    return np.array(image, dtype=np.float32, copy=True)
