"""The simple augmentation set: flips, 90° rotations, one affine intensity change.

``data.augment``'s ``flip``, ``rotate90`` and ``intensity`` (one ``probability`` for all
three): cheap, exact (no interpolation), the set every old spec uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import ClassVar

import numpy as np

from segcli.data.augment._common import Image, Label

__all__ = ["RandomFlip", "RandomIntensity", "RandomRot90"]


@dataclass(frozen=True)
class RandomFlip:
    """Mirror each axis of ``axes`` (all spatial axes when None) independently with
    ``probability`` (nnU-Net: 0.5 on every axis)."""

    probability: float = 0.5
    axes: Sequence[int] | None = None

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        for axis in range(label.ndim) if self.axes is None else self.axes:
            if rng.random() < self.probability:
                image = np.flip(image, axis=axis + 1)
                label = np.flip(label, axis=axis)
        return image, label


@dataclass(frozen=True)
class RandomRot90:
    """With ``probability``, rotate by 90°·k (k ∈ {1, 2, 3}) in a random eligible plane.

    A plane is eligible when its two axes have the same length (the patch keeps its shape) and,
    given ``spacing``, similar spacings: their ratio at most
    :data:`segcli.data.resample.ANISOTROPY_THRESHOLD` (nnU-Net's anisotropy rule), so a
    thick-slice axis is never rotated into the image plane.  With none (e.g. a 32×48 patch),
    nothing happens.
    """

    probability: float = 0.5
    #: voxel spacing (mm, array axis order) of the data the patches come from; None: isotropic
    spacing: tuple[float, ...] | None = None

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        planes = [
            (a, b)
            for a, b in combinations(range(label.ndim), 2)
            if label.shape[a] == label.shape[b] and self._similar(a, b)
        ]
        if not planes:
            return image, label
        a, b = planes[int(rng.integers(len(planes)))]
        k = int(rng.integers(1, 4))
        return np.rot90(image, k, axes=(a + 1, b + 1)), np.rot90(label, k, axes=(a, b))

    def _similar(self, a: int, b: int) -> bool:
        if self.spacing is None:
            return True
        from segcli.data.resample import ANISOTROPY_THRESHOLD

        low, high = sorted((float(self.spacing[a]), float(self.spacing[b])))
        return high <= ANISOTROPY_THRESHOLD * low


@dataclass(frozen=True)
class RandomIntensity:
    """With ``probability``, per channel: ``x · scale + shift·std(x)``.

    ``scale`` is uniform in :attr:`SCALE_RANGE`, ``shift`` uniform in ``±``:attr:`SHIFT` (a
    fraction of the channel's standard deviation); the label is untouched.  The ranges are
    fixed: ``data.augment.intensity`` switches this on or off, and ``brightness``, ``contrast``
    and ``gamma`` are the transforms whose ranges a spec sets.
    """

    probability: float = 0.5
    SCALE_RANGE: ClassVar[tuple[float, float]] = (0.9, 1.1)
    SHIFT: ClassVar[float] = 0.1

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        out = np.array(image, dtype=np.float32, copy=True)
        for c in range(out.shape[0]):
            channel = out[c]
            std = float(channel.std())
            scale = rng.uniform(*self.SCALE_RANGE)
            offset = rng.uniform(-self.SHIFT, self.SHIFT) * std
            channel *= np.float32(scale)
            channel += np.float32(offset)
        return out, label
