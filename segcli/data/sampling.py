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

__all__ = ["MAX_LOCATIONS", "foreground_locations", "sample_patch"]

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

    Args:
        image: ``(C, *spatial)``.
        label: ``(*spatial)``, same spatial shape.
        patch_size: spatial patch size, one entry per spatial axis.
        rng: source of all randomness.
        force_foreground: centre the patch on a foreground voxel.
        pad_mode, pad_value: how an image smaller than the patch is padded (see
            :func:`segcli.padding.pad_to_shape`); the label is padded with 0.
        foreground: precomputed :func:`foreground_locations` of ``label`` (unpadded
            coordinates); computed on the fly when ``None`` and needed.

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
    offset = np.zeros(len(spatial), dtype=np.int64)
    if any(s < p for s, p in zip(spatial, patch, strict=True)):
        offset = np.array([before for before, _ in pad_amounts(spatial, patch)], dtype=np.int64)
        image, _ = pad_to_shape(image, patch, mode=pad_mode, value=pad_value)
        padded_label, _ = pad_to_shape(label[None], patch, mode="constant", value=0)
        label = padded_label[0]
    size = np.array(label.shape, dtype=np.int64)
    psize = np.array(patch, dtype=np.int64)
    high = size - psize  # inclusive upper bound of the patch start
    if force_foreground:
        if foreground is None:
            foreground = foreground_locations(label)
            offset = np.zeros_like(offset)  # computed on the padded label already
        classes = sorted(c for c, loc in foreground.items() if len(loc))
    else:
        classes = []
    if classes:
        cls = classes[int(rng.integers(len(classes)))]
        locations = foreground[cls]  # type: ignore[index]
        voxel = locations[int(rng.integers(len(locations)))] + offset
        jitter = psize // 4
        shift = rng.integers(-jitter, jitter + 1)
        start = np.clip(voxel - psize // 2 + shift, 0, high)
    else:
        start = rng.integers(0, high + 1)
    box = tuple(slice(int(s), int(s) + int(p)) for s, p in zip(start, psize, strict=True))
    image_patch = np.ascontiguousarray(image[(slice(None), *box)])
    label_patch = np.ascontiguousarray(label[box])
    return image_patch, label_patch
