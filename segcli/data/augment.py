"""Patch augmentation: small callables ``(image, label, rng) -> (image, label)`` on numpy.

``image`` is ``(C, *spatial)``, ``label`` is ``(*spatial)``; spatial transforms move both
alike, intensity transforms touch the image only.  Each transform fires with its probability;
all randomness comes from the ``rng`` passed in.  Outputs may be views with negative strides:
call ``np.ascontiguousarray`` before ``torch.from_numpy``.

    >>> augment = build_augment(AugmentSpec(flip=True, rotate90=True), dims=2)
    >>> image, label = augment(image, label, np.random.default_rng(0))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import numpy.typing as npt

from segcli.config.schema import AugmentSpec

__all__ = ["Compose", "RandomFlip", "RandomIntensity", "RandomRot90", "build_augment"]

Image = npt.NDArray[np.floating]
Label = npt.NDArray[np.integer]


@dataclass(frozen=True)
class RandomFlip:
    """Mirror each spatial axis independently with ``probability``."""

    probability: float = 0.5

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        for axis in range(label.ndim):
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
    """With ``probability``, per channel: ``x · scale + shift·std(x)``, optionally a gamma.

    ``scale`` is uniform in ``scale_range``, ``shift`` uniform in ``±shift`` (a fraction of the
    channel's standard deviation).  With ``gamma_range``, the channel is rescaled to [0, 1],
    raised to a gamma drawn uniformly from the range and scaled back (nnU-Net's recipe, valid
    for normalised images with negative values).  The label is untouched.
    """

    probability: float = 0.5
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.1
    gamma_range: tuple[float, float] | None = None

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        out = np.array(image, dtype=np.float32, copy=True)
        for c in range(out.shape[0]):
            channel = out[c]
            std = float(channel.std())
            scale = rng.uniform(*self.scale_range)
            offset = rng.uniform(-self.shift, self.shift) * std
            channel *= np.float32(scale)
            channel += np.float32(offset)
            if self.gamma_range is not None:
                gamma = rng.uniform(*self.gamma_range)
                lo, hi = float(channel.min()), float(channel.max())
                if hi > lo:
                    unit = (channel - lo) / (hi - lo)
                    channel[...] = np.power(unit, gamma) * (hi - lo) + lo
        return out, label


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order; an empty Compose is the identity."""

    transforms: Sequence[RandomFlip | RandomRot90 | RandomIntensity] = field(default_factory=tuple)

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def __len__(self) -> int:
        return len(self.transforms)


def build_augment(spec: AugmentSpec, dims: int, spacing: Sequence[float] | None = None) -> Compose:
    """The transforms enabled in ``spec`` (flip, then rotate90, then intensity).

    Args:
        spec: ``data.augment``; ``spec.probability`` is each transform's probability (for
            flips: of each axis).
        dims: number of spatial axes (2 or 3).
        spacing: the data's voxel spacing (mm, array axis order): 90° rotations stay in planes
            of similar spacing (see :class:`RandomRot90`); None treats the data as isotropic.

    Raises:
        ValueError: ``dims`` not 2 or 3.
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    transforms: list[RandomFlip | RandomRot90 | RandomIntensity] = []
    if spec.flip:
        transforms.append(RandomFlip(spec.probability))
    if spec.rotate90:
        grid = None if spacing is None else tuple(float(v) for v in spacing)
        transforms.append(RandomRot90(spec.probability, grid))
    if spec.intensity:
        transforms.append(RandomIntensity(spec.probability))
    return Compose(tuple(transforms))
