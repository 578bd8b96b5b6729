"""nnU-Net v2's intensity transforms on numpy patches: noise, blur, brightness, contrast,
gamma (and inverted gamma), low-resolution simulation.

Each is a frozen dataclass ``(image, label, rng) -> (image, label)`` built from its
``data.augment`` block: it fires with ``probability``; once fired, each channel changes with
``channel_probability``.  The label is never touched; a fired transform returns a new float32
image (the input is not changed).  Draws, in order: fire?, the per-channel choices, then the
transform's values (see each class).

Implementations (one thread, 1-channel 40×56×40 and 64×160×160 patches, ``make
bench-augment``, docs/benchmarks.md): the blur is ``scipy.ndimage.gaussian_filter``; the
low-resolution simulation uses ``torch.nn.functional.interpolate`` (nearest-exact down, linear
up, as nnU-Net), 0.66 ms and 10.5 ms against 4.5 ms and 78 ms for the same two resamplings with
``scipy.ndimage.zoom``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segcli.data.augment._common import (
    Image,
    Label,
    channels_to_change,
    owned,
    split_uniform,
)

__all__ = [
    "RandomBlur",
    "RandomBrightness",
    "RandomContrast",
    "RandomGamma",
    "RandomLowResolution",
    "RandomNoise",
    "gamma_map",
]

#: smallest range / standard deviation divided by (flat channels are left alone)
_EPS = 1e-7


@dataclass(frozen=True)
class RandomNoise:
    """Add zero-mean Gaussian noise; its standard deviation is drawn once per patch from
    ``std`` (nnU-Net calls the range a variance but uses it as the standard deviation, as here).
    """

    probability: float = 0.1
    std: tuple[float, float] = (0.0, 0.1)
    channel_probability: float = 1.0

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        chosen = channels_to_change(rng, image.shape[0], self.channel_probability)
        std = np.float32(rng.uniform(*self.std))
        out = owned(image)
        for c in chosen:
            noise = rng.standard_normal(out.shape[1:], dtype=np.float32)
            noise *= std
            out[c] += noise
        return out, label


@dataclass(frozen=True)
class RandomBlur:
    """Gaussian blur with a sigma drawn per channel and axis from ``sigma`` (voxels).

    ``scipy.ndimage.gaussian_filter`` (mode ``reflect``, truncated at 4 sigma).  With
    ``coarse_axis`` (anisotropic data) that axis is not blurred: a sigma of one thick slice is
    a smear across several millimetres that no scanner makes.
    """

    probability: float = 0.2
    sigma: tuple[float, float] = (0.5, 1.0)
    channel_probability: float = 0.5
    coarse_axis: int | None = None

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        chosen = channels_to_change(rng, image.shape[0], self.channel_probability)
        out = owned(image)
        for c in chosen:
            sigmas = rng.uniform(*self.sigma, size=image.ndim - 1)
            if self.coarse_axis is not None:
                sigmas[self.coarse_axis] = 0.0
            out[c] = ndimage.gaussian_filter(out[c], sigmas, mode="reflect")
        return out, label


@dataclass(frozen=True)
class RandomBrightness:
    """Multiply each chosen channel by a factor from ``factor`` (below and above 1 equally often
    when the range straddles 1)."""

    probability: float = 0.15
    factor: tuple[float, float] = (0.75, 1.25)
    channel_probability: float = 1.0

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        chosen = channels_to_change(rng, image.shape[0], self.channel_probability)
        out = owned(image)
        for c in chosen:
            out[c] *= np.float32(split_uniform(rng, *self.factor))
        return out, label


@dataclass(frozen=True)
class RandomContrast:
    """Scale each chosen channel's deviation from its mean by a factor from ``factor``, then
    clip to the channel's former range (nnU-Net's ``preserve_range``)."""

    probability: float = 0.15
    factor: tuple[float, float] = (0.75, 1.25)
    channel_probability: float = 1.0

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        chosen = channels_to_change(rng, image.shape[0], self.channel_probability)
        out = owned(image)
        for c in chosen:
            x = out[c]
            factor = np.float32(split_uniform(rng, *self.factor))
            mean, low, high = np.float32(x.mean()), x.min(), x.max()
            x -= mean
            x *= factor
            x += mean
            np.clip(x, low, high, out=x)
        return out, label


def gamma_map(x: Image, gamma: float) -> Image:
    """``x`` rescaled to [0, 1], raised to ``gamma``, mapped back to its range (in place).

    Increasing for any ``gamma`` > 0 and keeps the minimum and the maximum; a constant ``x`` is
    returned unchanged.
    """
    low, high = x.min(), x.max()
    span = high - low
    if span <= _EPS:
        return x
    x -= low
    x /= span
    np.power(x, np.float32(gamma), out=x)
    x *= span
    x += low
    return x


@dataclass(frozen=True)
class RandomGamma:
    """:func:`gamma_map` with an exponent from ``gamma`` per chosen channel, then the channel's
    former mean and standard deviation restored (nnU-Net's ``retain_stats``).

    ``inverted``: the map is applied to ``-x`` (and negated back), so it brightens the dark end
    where the plain gamma darkens the bright one (nnU-Net's ``p_invert_image``).
    """

    probability: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    channel_probability: float = 1.0
    inverted: bool = False

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        chosen = channels_to_change(rng, image.shape[0], self.channel_probability)
        out = owned(image)
        for c in chosen:
            x = out[c]
            gamma = split_uniform(rng, *self.gamma)
            if self.inverted:
                np.negative(x, out=x)
            mean, std = x.mean(dtype=np.float64), x.std(dtype=np.float64)
            gamma_map(x, gamma)
            new_mean, new_std = x.mean(dtype=np.float64), x.std(dtype=np.float64)
            if new_std > _EPS:
                x -= np.float32(new_mean)
                x *= np.float32(std / new_std)
                x += np.float32(mean)
            if self.inverted:
                np.negative(x, out=x)
        return out, label


@dataclass(frozen=True)
class RandomLowResolution:
    """Simulate a coarser scan: each chosen channel is downsampled by a factor from ``zoom``
    (the same on every axis; nearest-exact), then upsampled back (linear), as nnU-Net.

    With ``coarse_axis`` (anisotropic data) that axis keeps its resolution (nnU-Net leaves the
    slice axis alone in its pseudo-2D case).
    """

    probability: float = 0.25
    zoom: tuple[float, float] = (0.5, 1.0)
    channel_probability: float = 0.5
    coarse_axis: int | None = None

    def __call__(self, image: Image, label: Label, rng: np.random.Generator) -> tuple[Image, Label]:
        if rng.random() >= self.probability:
            return image, label
        import torch
        import torch.nn.functional as F

        chosen = channels_to_change(rng, image.shape[0], self.channel_probability)
        out = owned(image)
        shape = out.shape[1:]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
        for c in chosen:
            zoom = float(rng.uniform(*self.zoom))
            small = [
                s if axis == self.coarse_axis else max(1, round(s * zoom))
                for axis, s in enumerate(shape)
            ]
            x = torch.from_numpy(out[c])[None, None]
            coarse = F.interpolate(x, size=small, mode="nearest-exact")
            out[c] = F.interpolate(coarse, size=shape, mode=mode, align_corners=False)[0, 0]
        return out, label
