"""Patch augmentation: ``data.augment`` as small callables ``(image, label, rng) -> (image, label)``.

``image`` is ``(C, *spatial)``, ``label`` is ``(*spatial)``; spatial transforms move both
alike, intensity transforms touch the image only.  Each transform fires with its probability;
all randomness comes from the ``rng`` passed in, so a patch is a function of its seed.  Outputs
may be views with negative strides: copy before ``torch.from_numpy``.

Rotation, scaling and elastic deformation need more than the patch (one resampling of a larger
crop): :class:`Compose` holds them apart as ``spatial``, drawn before the patch is read::

    >>> augment = build_augment(AugmentSpec(preset="nnunet"), dims=3, spacing=(1, 1, 1))
    >>> draw = augment.draw_spatial(rng, patch_size)       # after the patch position
    >>> # read the patch region grown by draw.margin (sampling.grow_region), then
    >>> image, label = augment.spatial.apply(image, label, draw)   # if draw is not None
    >>> image, label = augment(image, label, rng)          # everything else

Rooms: :mod:`.simple` (flip, rotate90, intensity), :mod:`.spatial`, :mod:`.intensity` (nnU-Net's
intensity transforms), :mod:`.cost` (what each costs per patch, and the cheapest set within a
time allowance: what the planner uses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from segcli.config.schema import AugmentSpec
from segcli.data.augment._common import Image, Label, coarse_axis
from segcli.data.augment.intensity import (
    RandomBlur,
    RandomBrightness,
    RandomContrast,
    RandomGamma,
    RandomLowResolution,
    RandomNoise,
)
from segcli.data.augment.simple import RandomFlip, RandomIntensity, RandomRot90
from segcli.data.augment.spatial import RandomSpatial, SpatialDraw

__all__ = [
    "Compose",
    "RandomBlur",
    "RandomBrightness",
    "RandomContrast",
    "RandomFlip",
    "RandomGamma",
    "RandomIntensity",
    "RandomLowResolution",
    "RandomNoise",
    "RandomRot90",
    "RandomSpatial",
    "SpatialDraw",
    "build_augment",
    "coarse_axis",
]

Transform = Callable[[Image, Label, np.random.Generator], tuple[Image, Label]]


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order (an empty Compose is the identity); ``spatial`` (or None)
    is applied by the patch reader before them (see the module docstring)."""

    transforms: Sequence[Transform] = field(default_factory=tuple)
    spatial: RandomSpatial | None = None

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        for transform in self.transforms:
            image, label = transform(image, label, rng)
        return image, label

    def draw_spatial(
        self, rng: np.random.Generator, patch_size: Sequence[int]
    ) -> SpatialDraw | None:
        """This patch's rotation/scaling/elastic draw; None (and no draw at all) without one."""
        return None if self.spatial is None else self.spatial.draw(rng, patch_size)

    def __len__(self) -> int:
        return len(self.transforms) + (self.spatial is not None)


def build_augment(spec: AugmentSpec, dims: int, spacing: Sequence[float] | None = None) -> Compose:
    """The transforms ``spec`` enables, in the order of :class:`segcli.config.schema.AugmentSpec`.

    Args:
        spec: ``data.augment``; ``spec.probability`` is the probability of flip (per axis),
            rotate90 and intensity; every other transform has its own.
        dims: number of spatial axes (2 or 3).
        spacing: the data's voxel spacing (mm, array axis order): anisotropic data (largest
            spacing more than 3 times the smallest) are rotated, scaled, deformed, blurred and
            degraded in the plane of the fine axes only, and 90° rotations stay in planes of
            similar spacing; None treats the data as isotropic.

    Raises:
        ValueError: ``dims`` not 2 or 3.
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    grid = None if spacing is None else tuple(float(v) for v in spacing)
    coarse = coarse_axis(grid)
    spatial = None
    if spec.rotation or spec.scaling or spec.elastic:
        spatial = RandomSpatial(
            rotation_probability=spec.rotation.probability if spec.rotation else None,
            degrees=spec.rotation.degrees if spec.rotation else None,
            scaling_probability=spec.scaling.probability if spec.scaling else None,
            scale=spec.scaling.factor if spec.scaling else (1.0, 1.0),
            elastic_probability=spec.elastic.probability if spec.elastic else None,
            sigma=spec.elastic.sigma if spec.elastic else (1.0, 1.0),
            magnitude=spec.elastic.magnitude if spec.elastic else (0.0, 0.0),
            coarse_axis=coarse,
            interpolation=spec.interpolation,
            label_interpolation=spec.label_interpolation,
        )
    transforms: list[Transform] = []
    if spec.noise:
        transforms.append(
            RandomNoise(spec.noise.probability, spec.noise.std, spec.noise.channel_probability)
        )
    if spec.blur:
        b = spec.blur
        transforms.append(RandomBlur(b.probability, b.sigma, b.channel_probability, coarse))
    if spec.brightness:
        b = spec.brightness
        transforms.append(RandomBrightness(b.probability, b.factor, b.channel_probability))
    if spec.contrast:
        c = spec.contrast
        transforms.append(RandomContrast(c.probability, c.factor, c.channel_probability))
    if spec.low_resolution:
        r = spec.low_resolution
        transforms.append(RandomLowResolution(r.probability, r.zoom, r.channel_probability, coarse))
    for gamma, inverted in ((spec.inverted_gamma, True), (spec.gamma, False)):
        if gamma:
            transforms.append(
                RandomGamma(gamma.probability, gamma.gamma, gamma.channel_probability, inverted)
            )
    if spec.flip:
        axes = None if spec.flip_axes is None else tuple(spec.flip_axes)
        transforms.append(RandomFlip(spec.probability, axes))
    if spec.rotate90:
        transforms.append(RandomRot90(spec.probability, grid))
    if spec.intensity:
        transforms.append(RandomIntensity(spec.probability))
    return Compose(tuple(transforms), spatial)
