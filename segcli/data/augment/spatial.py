"""Rotation, scaling and elastic deformation: one resampling of a crop larger than the patch.

nnU-Net's spatial transform, split in two so that the loader reads no more than it needs:

    >>> spatial = RandomSpatial(rotation_probability=0.2, scaling_probability=0.2)
    >>> draw = spatial.draw(rng, patch_size)          # None: nothing fires, read the patch
    >>> # read the patch's region grown by draw.margin on each side (segcli.data.sampling.grow_region)
    >>> image, label = spatial.apply(crop_image, crop_label, draw)   # (C, *patch), (*patch)

A draw fixes the matrix ``A`` (rotation · scale) and, for elastic, a smooth displacement field
``e``; output voxel ``j`` of the patch samples the crop at ``centre + A·(j − patch centre +
e(j))``.  The crop is the smallest that holds every sample for this draw (``draw.margin``), so
unlike nnU-Net's fixed "initial patch size" (the patch rotated by the largest angle, divided by
the smallest scale) no padding shows inside the patch unless the image itself ends there.

Anisotropic data (:func:`segcli.data.augment._common.coarse_axis`): the transform acts in the
other axes only, the same for every slice (nnU-Net's pseudo-2D augmentation; the rotation is
in-plane, ±180° by default); the coarse axis is read slice by slice, never interpolated.  An
axis the patch is one voxel thick along (3D data trained slice by slice) stays alike, and the
rest turns as 2D data do (nnU-Net's 2d configuration).

Backends, chosen by speed in a loader worker (one thread; a 40×56×40 patch rotated by 20° about
each axis and scaled by 1.1, its crop 70×80×74; ``make bench-augment``, docs/benchmarks.md):
the image by linear interpolation with ``torch.nn.functional.grid_sample`` (3.5 ms against
5.7 ms for ``scipy.ndimage.map_coordinates``; 103 ms against 133 ms at 64×160×160), the labels
one-hot in it too (5.9 ms against 12.1 ms for two foreground classes; 218 ms against 315 ms);
``label_interpolation: nearest`` by ``map_coordinates`` order 0 (2.2 ms both; 53 ms against
73 ms), and cubic images (``interpolation: cubic``: torch has no 3D bicubic) by order 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from segcli.data.augment._common import Image, Label

__all__ = ["RandomSpatial", "SpatialDraw", "nnunet_degrees"]


def nnunet_degrees(patch_size: Sequence[int], coarse_axis: int | None) -> tuple[float, float]:
    """nnU-Net's rotation range (degrees) for a patch: 3D ±30° about every axis; in-plane
    (2D data, or 3D with a coarse axis) ±180°, but ±15° for a 2D patch more than 1.5 times
    longer one way (``configure_rotation_dummyDA_mirroring_and_inital_patch_size``)."""
    if len(patch_size) == 3 and coarse_axis is None:
        return (-30.0, 30.0)
    if len(patch_size) == 2 and max(patch_size) > 1.5 * min(patch_size):
        return (-15.0, 15.0)
    return (-180.0, 180.0)


@dataclass(frozen=True)
class SpatialDraw:
    """One draw of :class:`RandomSpatial`: how one patch is resampled.

    Attributes:
        patch_size: the output patch.
        axes: the transformed axes (all, or all but the coarse one).
        matrix: ``(k, k)``, patch offsets → crop offsets over ``axes`` (rotation · scale).
        displacement: ``(k, *patch over axes)`` elastic offsets in voxels, or None.
        margin: voxels the crop extends beyond the patch on each side, per spatial axis.
    """

    patch_size: tuple[int, ...]
    axes: tuple[int, ...]
    matrix: npt.NDArray[np.float64]
    displacement: npt.NDArray[np.float32] | None
    margin: tuple[int, ...]

    @property
    def crop_size(self) -> tuple[int, ...]:
        """Spatial size of the crop :meth:`RandomSpatial.apply` takes: patch + 2·margin."""
        return tuple(p + 2 * m for p, m in zip(self.patch_size, self.margin, strict=True))


@dataclass(frozen=True)
class RandomSpatial:
    """Rotation, scaling and elastic deformation, each firing with its probability (None: the
    spec has no such block, and nothing is drawn for it).

    Args:
        rotation_probability, degrees: the rotation; one angle per rotation axis, uniform in
            ``degrees`` (None: :func:`nnunet_degrees`).
        scaling_probability, scale: the scaling; one factor for every transformed axis, uniform
            in ``scale`` (> 1 zooms out, as nnU-Net).
        elastic_probability, sigma, magnitude: the deformation; per axis, a Gaussian-smoothed
            noise field of sigma uniform in ``sigma`` voxels, scaled so that its largest
            displacement is uniform in ``magnitude`` voxels.
        coarse_axis: the thick-slice axis of anisotropic data (kept as is), or None.
        interpolation: ``linear`` or ``cubic`` for the image.
        label_interpolation: ``onehot`` (each class's indicator linearly, then the largest;
            background = 1 − the others) or ``nearest``.
    """

    rotation_probability: float | None = None
    degrees: tuple[float, float] | None = None
    scaling_probability: float | None = None
    scale: tuple[float, float] = (0.7, 1.4)
    elastic_probability: float | None = None
    sigma: tuple[float, float] = (9.0, 13.0)
    magnitude: tuple[float, float] = (0.0, 8.0)
    coarse_axis: int | None = None
    interpolation: str = "linear"
    label_interpolation: str = "onehot"

    def draw(self, rng: np.random.Generator, patch_size: Sequence[int]) -> SpatialDraw | None:
        """Decide this patch's transform; None when neither rotation, scaling nor elastic fires.

        Draws, in order: fire? for rotation, scaling, elastic (each only when configured); the
        angles; the scale; the elastic sigmas, magnitudes and noise fields.
        """
        patch = tuple(int(p) for p in patch_size)
        fire = [
            p is not None and rng.random() < p
            for p in (self.rotation_probability, self.scaling_probability, self.elastic_probability)
        ]
        if not any(fire):
            return None
        rotate, scale, deform = fire
        # the coarse axis, and an axis one voxel thick (slices of 3D data, --dims 2), stay as is
        axes = tuple(
            a for a in range(len(patch)) if a != self.coarse_axis and patch[a] > 1
        )  # fmt: skip
        if not axes:  # a patch of one voxel per axis: nothing to move
            return None
        plane = tuple(patch[a] for a in axes)
        k = len(axes)
        if k == 0:  # nothing left to move (e.g. a 1×1 patch)
            return None
        matrix = np.eye(k)
        if rotate and k >= 2:
            slices = self.coarse_axis is None and k < len(patch)  # nnU-Net's 2d configuration
            rule = (
                nnunet_degrees(plane, None) if slices else nnunet_degrees(patch, self.coarse_axis)
            )
            low, high = self.degrees or rule
            matrix = _rotation(rng.uniform(low, high, size=1 if k == 2 else 3))
        if scale:
            matrix = matrix * rng.uniform(*self.scale)
        displacement, reach = None, np.zeros(k)
        if deform:
            sigmas = rng.uniform(*self.sigma, size=k)
            reach = rng.uniform(*self.magnitude, size=k)
            displacement = np.stack(
                [_smooth_field(rng, plane, s, m) for s, m in zip(sigmas, reach, strict=True)]
            )
        half = (np.array(plane, dtype=np.float64) - 1) / 2
        extent = np.abs(matrix) @ (half + reach) + (2 if self.interpolation == "cubic" else 0)
        grow = np.maximum(0, np.ceil(extent - half - 1e-6)).astype(int)
        margin = [0] * len(patch)
        for a, m in zip(axes, grow, strict=True):
            margin[a] = int(m)
        return SpatialDraw(patch, axes, matrix, displacement, tuple(margin))

    def apply(self, image: Image, label: Label, draw: SpatialDraw) -> tuple[Image, Label]:
        """Resample the crop (``image`` ``(C, *draw.crop_size)``, ``label`` ``(*crop)``,
        centred on the patch) into the patch: ``(C, *patch)`` float32 and ``(*patch)`` of the
        label's dtype.

        Raises:
            ValueError: the crop's shape is not ``draw.crop_size``.
        """
        crop = draw.crop_size
        if tuple(image.shape[1:]) != crop or tuple(label.shape) != crop:
            raise ValueError(
                f"the crop must be {crop} (patch {draw.patch_size} + 2 × margin {draw.margin}), "
                f"got image {tuple(image.shape)} and label {tuple(label.shape)}"
            )
        image = np.ascontiguousarray(image, dtype=np.float32)
        label = np.ascontiguousarray(label)
        coords = None
        if self.interpolation == "cubic" or self.label_interpolation == "nearest":
            coords = _coordinates(draw)
        linear_image = self.interpolation == "linear"
        onehot = self.label_interpolation == "onehot"
        out_image = out_label = None
        if linear_image or onehot:  # one grid_sample pass for the image and the indicators
            out_image, out_label = _linear(image if linear_image else None,
                                           label if onehot else None, _Grid(draw))  # fmt: skip
        if not linear_image:
            out_image = np.stack(
                [ndimage.map_coordinates(c, coords, order=3, mode="nearest") for c in image]
            ).astype(np.float32, copy=False)
        if not onehot:
            out_label = ndimage.map_coordinates(label, coords, order=0, mode="nearest")
        assert out_image is not None and out_label is not None
        return out_image, out_label


# --------------------------------------------------------------------------- draws


def _rotation(angles: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rotation matrix in array axis order: 2D from one angle; 3D rotations about axes 0, 1
    and 2 composed (``R2 · R1 · R0``, nnU-Net's order), angles in degrees."""
    if len(angles) == 1:
        t = math.radians(float(angles[0]))
        return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float, magnitude: float
) -> npt.NDArray[np.float32]:
    """Gaussian-smoothed white noise over ``shape`` (sigma in voxels), scaled so that its
    largest absolute value is ``magnitude``.

    The noise lives on a grid about sigma/3 voxels coarse (a field that smooth has no detail
    finer than that), is smoothed there by ``scipy.ndimage.gaussian_filter`` and brought to
    ``shape`` by linear interpolation: the cost no longer grows with sigma³.
    """
    import torch
    import torch.nn.functional as F

    step = max(1.0, sigma / 3.0)
    coarse = [1 if s == 1 else max(2, math.ceil((s - 1) / step) + 1) for s in shape]
    noise = rng.standard_normal(coarse, dtype=np.float32)
    sigmas = [
        0.0 if s == 1 else sigma * (n - 1) / (s - 1) for s, n in zip(shape, coarse, strict=True)
    ]
    field = ndimage.gaussian_filter(noise, sigmas, mode="reflect")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    up = F.interpolate(torch.from_numpy(field)[None, None], size=shape, mode=mode,
                       align_corners=True)[0, 0].numpy()  # fmt: skip
    peak = float(np.abs(up).max())
    return up * np.float32(magnitude / peak) if peak > 0 else np.zeros(shape, np.float32)


# --------------------------------------------------------------------------- resampling


def _coordinates(draw: SpatialDraw) -> npt.NDArray[np.float32]:
    """Crop coordinates ``(d, *patch)`` of every patch voxel (scipy's ``map_coordinates``); on
    the coarse axis the slice index itself (exact integers: no slice is mixed)."""
    patch = draw.patch_size
    plane = tuple(patch[a] for a in draw.axes)
    half = (np.array(plane, dtype=np.float32) - 1) / 2
    offsets = np.indices(plane, dtype=np.float32) - half.reshape(-1, *([1] * len(plane)))
    if draw.displacement is not None:
        offsets += draw.displacement
    centre = half + np.array([draw.margin[a] for a in draw.axes], dtype=np.float32)
    mapped = np.einsum("ij,j...->i...", draw.matrix.astype(np.float32), offsets)
    mapped += centre.reshape(-1, *([1] * len(plane)))
    coords = np.empty((len(patch), *patch), dtype=np.float32)
    for i, a in enumerate(draw.axes):
        coords[a] = np.expand_dims(mapped[i], tuple(set(range(len(patch))) - set(draw.axes)))
    for a in set(range(len(patch))) - set(draw.axes):
        shape = [1] * len(patch)
        shape[a] = patch[a]
        coords[a] = np.arange(patch[a], dtype=np.float32).reshape(shape)
    return coords


class _Grid:
    """``torch.nn.functional.grid_sample`` over the transformed axes; a coarse axis becomes
    the batch axis (slice by slice, the same 2D (or 1D) grid for every slice)."""

    def __init__(self, draw: SpatialDraw) -> None:
        import torch
        import torch.nn.functional as F

        self.draw = draw
        plane = [draw.patch_size[a] for a in draw.axes]
        crop = draw.crop_size
        half_crop = np.array([(crop[a] - 1) / 2 for a in draw.axes], dtype=np.float64)
        scale = np.divide(1.0, half_crop, out=np.zeros_like(half_crop), where=half_crop > 0)
        half = (np.array(plane, dtype=np.float64) - 1) / 2
        # normalised crop coordinates (align_corners=True) per normalised patch coordinate
        theta = scale[:, None] * draw.matrix * half[None, :]
        k = len(plane)
        if k == 1:  # one transformed axis (2D data with a coarse axis): a 1×W grid
            x = torch.linspace(-1.0, 1.0, plane[0]) if plane[0] > 1 else torch.zeros(1)
            grid = torch.stack([x * float(theta[0, 0]), torch.zeros_like(x)], dim=-1)[None, None]
        else:
            xyz = torch.from_numpy(theta[::-1, ::-1].copy()).float()
            affine = torch.cat([xyz, torch.zeros(k, 1)], dim=1)[None]
            grid = F.affine_grid(affine, [1, 1, *plane], align_corners=True)
        if draw.displacement is not None:
            shift = np.einsum("ij,j...->...i", scale[:, None] * draw.matrix, draw.displacement)
            shift = torch.from_numpy(np.array(shift[..., ::-1], dtype=np.float32, copy=True))
            if k == 1:
                grid[..., 0] += shift[None, None, :, 0]
            else:
                grid += shift[None]
        self.grid = grid
        self.plane = plane

    def sample(self, volume: npt.NDArray[np.float32], mode: str = "bilinear") -> npt.NDArray:
        """Resample ``volume`` ``(C, *crop)`` into ``(C, *patch)``."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(volume)
        fixed = [a for a in range(x.ndim - 1) if a not in self.draw.axes]
        if fixed:  # the untransformed axes become the batch: (S, C, *crop over axes)
            order = [a + 1 for a in fixed] + [0] + [a + 1 for a in self.draw.axes]
            kept = [x.shape[a] for a in order[: len(fixed)]]
            x = x.permute(order).reshape(
                -1, *x.shape[:1], *[x.shape[a + 1] for a in self.draw.axes]
            )
            if len(self.plane) == 1:
                x = x.unsqueeze(2)  # (S, C, 1, W)
            grid = self.grid.expand(x.shape[0], *self.grid.shape[1:])
        else:
            x, grid = x[None], self.grid
        out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=True)
        if fixed:
            if len(self.plane) == 1:
                out = out.squeeze(2)
            out = out.reshape(*kept, *out.shape[1:]).permute(list(np.argsort(order)))
        else:
            out = out[0]
        return np.ascontiguousarray(out.numpy())


#: channels resampled per grid_sample call: one call shares the weights across its channels
#: (3 channels cost about 1.7 times one) ...
_CHANNELS_PER_PASS = 4
#: ... while their buffer stays within this many voxels (64 MB of float32): a CT crop goes one
#: channel at a time
_PASS_VOXELS = 2**24


def _label_values(label: Label) -> list[int]:
    """The foreground values present in ``label``."""
    low, high = int(label.min()), int(label.max())
    if low >= 0 and high <= 64:  # a few small values: a pass per value beats sorting the crop
        return [v for v in range(1, high + 1) if (label == v).any()]
    return [int(v) for v in np.unique(label) if v != 0]


def _linear(
    image: npt.NDArray[np.float32] | None, label: Label | None, grid: _Grid
) -> tuple[npt.NDArray[np.float32] | None, Label | None]:
    """The image's channels linearly, and the label one-hot: each foreground class's
    indicator linearly, a voxel taking the class of the largest share, background (1 − the
    foreground shares) winning ties; channels batched per pass (:data:`_CHANNELS_PER_PASS`)."""
    patch = grid.draw.patch_size
    jobs: list[tuple[str, int]] = []
    if image is not None:
        jobs += [("image", c) for c in range(image.shape[0])]
    values = _label_values(label) if label is not None else []
    jobs += [("label", v) for v in values]
    out_image = None if image is None else np.empty((image.shape[0], *patch), np.float32)
    out_label = None if label is None else np.zeros(patch, dtype=label.dtype)
    best = total = None
    crop = grid.draw.crop_size
    per_pass = max(1, min(_CHANNELS_PER_PASS, _PASS_VOXELS // math.prod(crop)))
    for first in range(0, len(jobs), per_pass):
        chunk = jobs[first : first + per_pass]
        buffer = np.empty((len(chunk), *crop), dtype=np.float32)
        for row, (kind, index) in zip(buffer, chunk, strict=True):
            if kind == "image":
                row[...] = image[index]  # type: ignore[index]
            else:
                np.equal(label, index, out=row, casting="unsafe")
        for share, (kind, index) in zip(grid.sample(buffer), chunk, strict=True):
            if kind == "image":
                out_image[index] = share  # type: ignore[index]
            elif best is None:
                best, total = share.copy(), share.copy()
                out_label[...] = index  # type: ignore[index]
            else:
                total += share
                out_label[share > best] = index  # type: ignore[index]
                np.maximum(best, share, out=best)
    if best is not None:
        out_label[(1.0 - total) >= best] = 0  # type: ignore[index, operator]
    return out_image, out_label
