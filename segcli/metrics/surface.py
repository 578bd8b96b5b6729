"""Surface-distance metrics: boundaries and distances computed once, five metrics derived.

    >>> import numpy as np
    >>> from segcli.metrics.surface import surface_distances, hd, hd95, nsd
    >>> ref = np.zeros((20, 20), bool); ref[5:15, 5:15] = True
    >>> d = surface_distances(np.roll(ref, 2, axis=1), ref, spacing=(1.0, 0.5))
    >>> hd(d), nsd(d, tolerance_mm=0.5)
    (1.0, 0.5)

Definitions (SPEC.md, "Metrics"): the boundary of a mask is the set of its voxels with at least
one face-neighbour outside the mask, the image border counting as outside.  With ``A`` the
prediction boundary and ``B`` the reference boundary, :class:`SurfaceDistances` holds the two
directed distance arrays ``d(a, B)`` and ``d(b, A)`` (Euclidean, between voxel centres, in mm);
:func:`hd`, :func:`hd95`, :func:`assd`, :func:`masd` and :func:`nsd` are pure functions of it.

Speed: the caller crops both masks to the bounding box of their union (nothing outside it is
foreground, so the crop needs no margin: :func:`boundary` pads one background voxel, which is
also what makes the image border count as outside).  The distances come from a KD-tree over
the boundary points or from a Euclidean distance transform of the crop, whichever is cheaper
for the crop (see :func:`surface_distances`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "SurfaceDistances",
    "assd",
    "boundary",
    "hd",
    "hd95",
    "masd",
    "nsd",
    "surface_distances",
]

DistanceMethod = Literal["auto", "kdtree", "edt"]

#: Crops up to this many voxels always use the distance transform (it has no per-point cost and
#: measured faster than a KD-tree for every boundary density on crops this small).
_EDT_MAX_VOXELS = 64_000
#: Above that size the distance transform wins once boundary voxels are this dense in the crop
#: (measured crossover about 0.3; organ-like masks have 0.02–0.1, noisy masks 0.5 and more).
_EDT_MIN_BOUNDARY_FRACTION = 0.3


def boundary(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Voxels of ``mask`` with at least one face-neighbour outside it (image border = outside).

    Equivalent to ``mask & ~binary_erosion(mask, border_value=0)`` with the face-connected
    structure (4-neighbourhood in 2D, 6 in 3D), computed with 2·ndim shifted ANDs of a padded
    copy, which is about ten times faster than ``scipy.ndimage.binary_erosion``.

    Args:
        mask: boolean array, any number of dimensions.

    Returns:
        Boolean array of the same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return mask.copy()
    padded = np.pad(mask, 1)
    interior = mask.copy()
    centre = [slice(1, -1)] * mask.ndim
    for axis in range(mask.ndim):
        for shift in (slice(0, -2), slice(2, None)):
            neighbour = list(centre)
            neighbour[axis] = shift
            interior &= padded[tuple(neighbour)]
    return mask & ~interior


@dataclass(frozen=True, eq=False)
class SurfaceDistances:
    """The two directed boundary-distance sets of one (prediction, reference) pair, in mm.

    Attributes:
        pred_to_ref: ``d(a, B)`` for every prediction boundary voxel ``a``, shape ``(|A|,)``.
        ref_to_pred: ``d(b, A)`` for every reference boundary voxel ``b``, shape ``(|B|,)``.

    A mask is empty exactly when its boundary is, so both arrays empty means both masks empty,
    and one empty array means exactly one empty mask.
    """

    pred_to_ref: npt.NDArray[np.float64]
    ref_to_pred: npt.NDArray[np.float64]

    @property
    def both_empty(self) -> bool:
        return self.pred_to_ref.size == 0 and self.ref_to_pred.size == 0

    @property
    def one_empty(self) -> bool:
        return (self.pred_to_ref.size == 0) != (self.ref_to_pred.size == 0)


def surface_distances(
    pred: npt.NDArray[np.bool_],
    ref: npt.NDArray[np.bool_],
    spacing: Sequence[float],
    method: DistanceMethod = "auto",
) -> SurfaceDistances:
    """Boundaries of ``pred`` and ``ref`` and the distances between them, computed once.

    Args:
        pred: predicted boolean mask, any number of dimensions (crop it to the bounding box of
            ``pred | ref`` first for speed; the result does not change).
        ref: reference boolean mask, same shape.
        spacing: voxel size per axis in mm, array axis order.
        method: ``"kdtree"`` (``scipy.spatial.cKDTree`` over boundary points: cost grows with
            the number of boundary voxels), ``"edt"`` (``distance_transform_edt`` with
            ``sampling=spacing`` over the crop: cost grows with the crop volume), or ``"auto"``:
            the distance transform for crops of at most 64,000 voxels or when boundary voxels
            fill more than 30% of the crop, else the KD-tree.  Both are exact and agree to
            floating-point rounding.

    Returns:
        The directed distance arrays; an empty mask gives an empty array for its side.

    Raises:
        ValueError: shapes differ, or ``spacing`` does not have one positive value per axis.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    spacing_mm = np.asarray(spacing, dtype=np.float64)
    if spacing_mm.shape != (pred.ndim,) or not np.all(np.isfinite(spacing_mm) & (spacing_mm > 0)):
        raise ValueError(
            f"spacing must have one positive value per axis ({pred.ndim}), got {tuple(spacing)}"
        )
    if method not in ("auto", "kdtree", "edt"):
        raise ValueError(f"method must be 'auto', 'kdtree' or 'edt', got {method!r}")
    edge_pred, edge_ref = boundary(pred), boundary(ref)
    num_pred, num_ref = int(np.count_nonzero(edge_pred)), int(np.count_nonzero(edge_ref))
    if num_pred == 0 or num_ref == 0:
        empty = np.zeros(0, dtype=np.float64)
        pred_side = empty if num_pred == 0 else np.full(num_pred, np.inf)
        ref_side = empty if num_ref == 0 else np.full(num_ref, np.inf)
        return _frozen(pred_side, ref_side)
    if method == "auto":
        dense = num_pred + num_ref > _EDT_MIN_BOUNDARY_FRACTION * pred.size
        method = "edt" if pred.size <= _EDT_MAX_VOXELS or dense else "kdtree"
    if method == "edt":
        sampling = tuple(float(s) for s in spacing_mm)
        pred_to_ref = ndimage.distance_transform_edt(~edge_ref, sampling=sampling)[edge_pred]
        ref_to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=sampling)[edge_ref]
    else:
        points_pred = np.argwhere(edge_pred) * spacing_mm
        points_ref = np.argwhere(edge_ref) * spacing_mm
        pred_to_ref = cKDTree(points_ref, leafsize=32).query(points_pred, k=1)[0]
        ref_to_pred = cKDTree(points_pred, leafsize=32).query(points_ref, k=1)[0]
    return _frozen(pred_to_ref, ref_to_pred)


def _frozen(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> SurfaceDistances:
    arrays = []
    for values in (pred_to_ref, ref_to_pred):
        values = np.ascontiguousarray(values, dtype=np.float64)
        values.flags.writeable = False
        arrays.append(values)
    return SurfaceDistances(arrays[0], arrays[1])


def _undefined(distances: SurfaceDistances) -> float | None:
    """0.0 when both masks are empty, NaN when exactly one is, None when both have a boundary."""
    if distances.both_empty:
        return 0.0
    if distances.pred_to_ref.size == 0 or distances.ref_to_pred.size == 0:
        return float("nan")
    return None


def hd(distances: SurfaceDistances) -> float:
    """Hausdorff distance (mm): the larger of the two directed maxima.

    Both masks empty → 0.0; exactly one empty → NaN.
    """
    special = _undefined(distances)
    if special is not None:
        return special
    return float(max(distances.pred_to_ref.max(), distances.ref_to_pred.max()))


def hd95(distances: SurfaceDistances) -> float:
    """95th-percentile Hausdorff distance (mm), the MONAI convention.

    ``max(P95{d(a, B)}, P95{d(b, A)})`` with numpy's default linear interpolation, i.e. the
    larger of the two *directed* percentiles (MedPy instead takes one percentile of the pooled
    distances, which can differ).  Both masks empty → 0.0; exactly one empty → NaN.
    """
    special = _undefined(distances)
    if special is not None:
        return special
    return float(
        max(np.percentile(distances.pred_to_ref, 95), np.percentile(distances.ref_to_pred, 95))
    )


def assd(distances: SurfaceDistances) -> float:
    """Average symmetric surface distance (mm), the pooled mean over both boundaries.

    ``(Σ_a d(a, B) + Σ_b d(b, A)) / (|A| + |B|)`` — MONAI's
    ``compute_average_surface_distance(symmetric=True)``.  Both empty → 0.0; one empty → NaN.
    """
    special = _undefined(distances)
    if special is not None:
        return special
    total = distances.pred_to_ref.sum() + distances.ref_to_pred.sum()
    return float(total / (distances.pred_to_ref.size + distances.ref_to_pred.size))


def masd(distances: SurfaceDistances) -> float:
    """Mean average surface distance (mm), the mean of the two directed means.

    ``(mean_a d(a, B) + mean_b d(b, A)) / 2`` — what MedPy's ``assd`` and MetricsReloaded's
    MASD compute.  Equals :func:`assd` when ``|A| = |B|``.  Both empty → 0.0; one empty → NaN.
    """
    special = _undefined(distances)
    if special is not None:
        return special
    return float((distances.pred_to_ref.mean() + distances.ref_to_pred.mean()) / 2)


def nsd(distances: SurfaceDistances, tolerance_mm: float = 1.0) -> float:
    """Normalised surface distance (surface Dice) at ``tolerance_mm``, in [0, 1].

    ``(|{a: d(a, B) ≤ τ}| + |{b: d(b, A) ≤ τ}|) / (|A| + |B|)`` — MONAI's
    ``compute_surface_dice`` without sub-voxel areas.  Both masks empty → 1.0; exactly one
    empty → 0.0.  Non-decreasing in ``tolerance_mm``.

    Raises:
        ValueError: ``tolerance_mm`` negative or not finite.
    """
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"nsd tolerance must be a finite number >= 0 mm, got {tolerance_mm}")
    if distances.both_empty:
        return 1.0
    if distances.one_empty:
        return 0.0
    within = np.count_nonzero(distances.pred_to_ref <= tolerance_mm) + np.count_nonzero(
        distances.ref_to_pred <= tolerance_mm
    )
    return float(within / (distances.pred_to_ref.size + distances.ref_to_pred.size))
