"""Training patches: random crops, some forced onto foreground (nnU-Net's oversampling).

Pure numpy functions; the randomness comes only from the ``rng`` passed in.  An image smaller
than the patch is first padded by :func:`segcli.padding.pad_to_shape` — the same centred rule,
per-channel ``minimum`` by default, that inference uses for its windows — and its label with 0.

    >>> rng = np.random.default_rng(0)
    >>> fg = foreground_locations(label)                   # once per case
    >>> img, lab = sample_patch(image, label, (32, 32), rng, force_foreground=True, foreground=fg)
    >>> img.shape, lab.shape                               # ((C, 32, 32), (32, 32))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from segcli.padding import pad_amounts, pad_to_shape

__all__ = [
    "MAX_LOCATIONS",
    "foreground_locations",
    "grow_region",
    "pad_region",
    "patch_region",
    "sample_patch",
]

#: at most this many voxel coordinates are kept per class (randomly chosen), as in nnU-Net
MAX_LOCATIONS = 10_000


def foreground_locations(
    label: npt.NDArray[np.integer],
    max_per_class: int = MAX_LOCATIONS,
    seed: int = 0,
) -> dict[int, npt.NDArray[np.int64]]:
    """Coordinates of the voxels of every foreground class, computed once per case.

    Args:
        label: integer label map ``(*spatial)``; any non-zero value is foreground.
        max_per_class: keep at most this many voxels per class, drawn at random (deterministic
            in ``seed``) so that big volumes stay cheap to store.
        seed: seed of that subsampling.

    Returns:
        ``{class: (N, ndim) int64 coordinates}`` for every class present (N ≥ 1); ``{}`` when
        the label has no foreground.
    """
    label = np.asarray(label)
    flat = label.ravel()
    nonzero = np.flatnonzero(flat)
    if nonzero.size == 0:
        return {}
    values = flat[nonzero]
    rng = np.random.default_rng(seed)
    out: dict[int, npt.NDArray[np.int64]] = {}
    for value in np.unique(values):
        idx = nonzero[values == value]
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        out[int(value)] = np.stack(np.unravel_index(idx, label.shape), axis=1).astype(np.int64)
    return out


def patch_region(
    spatial: Sequence[int],
    patch_size: Sequence[int],
    rng: np.random.Generator,
    force_foreground: bool,
    foreground: dict[int, npt.NDArray[np.int64]] | None,
) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """Where one training patch lies: the region of the image to read and how to pad it.

    The draws of :func:`sample_patch` without touching any voxel, so that a patch can be read
    from a file (the preprocessing cache) without loading the image.

    Returns:
        ``(region, pad)``: ``region`` = one slice per spatial axis inside the image; ``pad`` =
        ``(before, after)`` per axis that brings the region to ``patch_size`` (non-zero only on
        axes where the image is smaller than the patch, where the region is the whole axis).
    """
    patch = tuple(int(p) for p in patch_size)
    spatial = tuple(int(s) for s in spatial)
    amounts = pad_amounts(spatial, patch)
    offset = np.array([before for before, _ in amounts], dtype=np.int64)
    size = np.array([max(s, p) for s, p in zip(spatial, patch, strict=True)], dtype=np.int64)
    psize = np.array(patch, dtype=np.int64)
    high = size - psize  # inclusive upper bound of the patch start (padded coordinates)
    classes = []
    if force_foreground and foreground:
        classes = sorted(c for c, loc in foreground.items() if len(loc))
    if classes:
        cls = classes[int(rng.integers(len(classes)))]
        locations = foreground[cls]  # type: ignore[index]
        voxel = locations[int(rng.integers(len(locations)))] + offset
        jitter = psize // 4
        shift = rng.integers(-jitter, jitter + 1)
        start = np.clip(voxel - psize // 2 + shift, 0, high)
    else:
        start = rng.integers(0, high + 1)
    region, pad = [], []
    for s, p, st, (before, after) in zip(spatial, patch, start, amounts, strict=True):
        if s < p:  # the whole axis, padded (the start is 0 there)
            region.append(slice(0, s))
            pad.append((before, after))
        else:
            region.append(slice(int(st), int(st) + p))
            pad.append((0, 0))
    return tuple(region), pad


def grow_region(
    spatial: Sequence[int],
    region: Sequence[slice],
    pad: Sequence[tuple[int, int]],
    margin: Sequence[int],
) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The region and padding of a crop ``margin`` voxels larger than a patch on each side.

    ``region``/``pad`` are :func:`patch_region`'s answer for the patch; the crop keeps its
    centre (what a rotation or scaling resamples from).  Where the crop leaves the image the
    part outside becomes padding, exactly as for a patch larger than the image.

    Returns:
        ``(region, pad)`` of the crop, in :func:`patch_region`'s form.
    """
    out_region, out_pad = [], []
    for s, r, (before, after), m in zip(spatial, region, pad, margin, strict=True):
        start = int(r.start) - before - int(m)  # crop start in image coordinates (may be < 0)
        stop = int(r.stop) + after + int(m)
        low, high = max(start, 0), min(stop, int(s))
        out_region.append(slice(low, high))
        out_pad.append((low - start, stop - high))
    return tuple(out_region), out_pad


def pad_region(
    image: npt.NDArray[np.floating],
    pad: Sequence[tuple[int, int]],
    mode: str,
    value: float = 0.0,
    minimum: npt.NDArray[np.floating] | Sequence[float] | None = None,
) -> npt.NDArray[np.floating]:
    """Pad a region ``(C, *spatial)`` read by :func:`patch_region` to the patch.

    ``minimum`` (per channel) is the whole image's minimum for ``mode="minimum"`` (the region's
    own minimum when None — the same when the region is the whole image).
    """
    if not any(b or a for b, a in pad):
        return image
    target = [s + b + a for s, (b, a) in zip(image.shape[1:], pad, strict=True)]
    if mode == "minimum" and minimum is not None:
        filled = np.empty((image.shape[0], *target), dtype=image.dtype)
        filled[...] = np.asarray(minimum, dtype=image.dtype).reshape((-1,) + (1,) * len(pad))
        inner = tuple(slice(b, b + s) for (b, _), s in zip(pad, image.shape[1:], strict=True))
        filled[(slice(None), *inner)] = image
        return filled
    padded, _ = pad_to_shape(image, target, mode=mode, value=value)
    return padded


def sample_patch(
    image: npt.NDArray[np.floating],
    label: npt.NDArray[np.integer],
    patch_size: Sequence[int],
    rng: np.random.Generator,
    force_foreground: bool,
    pad_mode: str = "minimum",
    pad_value: float = 0.0,
    foreground: dict[int, npt.NDArray[np.int64]] | None = None,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.integer]]:
    """Crop one training patch.

    A forced-foreground patch picks a class uniformly among the foreground classes present,
    then one of its voxels uniformly, and centres the patch on it with a random jitter of up to
    ±patch/4 per axis (the voxel stays in the central half of the patch unless the image border
    is closer), clipped to lie inside the (padded) image.  Otherwise, or when the case has no
    foreground, the patch position is uniform over all positions that fit.

    Only the patch's region of ``image`` and ``label`` is read (they may be memory maps).

    Args:
        image: ``(C, *spatial)``.
        label: ``(*spatial)``, same spatial shape.
        patch_size: spatial patch size, one entry per spatial axis.
        rng: source of all randomness.
        force_foreground: centre the patch on a foreground voxel.
        pad_mode, pad_value: how an image smaller than the patch is padded (see
            :func:`segcli.padding.pad_to_shape`); the label is padded with 0.
        foreground: precomputed :func:`foreground_locations` of ``label``; computed on the fly
            when ``None`` and needed.

    Returns:
        ``(image_patch (C, *patch), label_patch (*patch))``, fresh contiguous arrays.

    Raises:
        ValueError: dimensions of ``image``, ``label`` and ``patch_size`` disagree.
    """
    patch = tuple(int(p) for p in patch_size)
    spatial = tuple(image.shape[1:])
    if len(patch) != len(spatial):
        raise ValueError(
            f"patch_size {patch} has {len(patch)} axes but the image (C, *spatial) "
            f"{tuple(image.shape)} has {len(spatial)}"
        )
    if tuple(label.shape) != spatial:
        raise ValueError(
            f"label shape {tuple(label.shape)} differs from the image's spatial {spatial}"
        )
    if force_foreground and foreground is None:
        foreground = foreground_locations(label)
    region, pad = patch_region(spatial, patch, rng, force_foreground, foreground)
    image_patch = np.array(image[(slice(None), *region)], copy=True)
    label_patch = np.array(label[region], copy=True)
    minimum = None
    if pad_mode == "minimum" and any(b or a for b, a in pad):
        minimum = np.asarray(image).reshape(image.shape[0], -1).min(axis=1)
    image_patch = pad_region(image_patch, pad, pad_mode, pad_value, minimum)
    label_patch = pad_region(label_patch[None], pad, "constant", 0)[0]
    return np.ascontiguousarray(image_patch), np.ascontiguousarray(label_patch)
