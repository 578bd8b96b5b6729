"""Constructed predictions for the lecture's metric pitfalls (docs/lecture.md, tests).

Three claims of the lecture's "Metrics" part, each built from a reference shape by a function
so that a test and the lecture document use the same arrays:

1. *Dice does not take shape into account*: :func:`same_dice_predictions` builds five
   predictions of one reference disk with the same Dice (0.6, so IoU 0.43) and very different
   boundaries.
2. *Distance metrics don't see holes*: :func:`hole_predictions` punches holes into a perfect
   prediction; :func:`count_holes` counts them.
3. *Dice on tiny lesions is a detection problem*: :func:`tiny_lesions` scatters small squares;
   shifting them (:func:`shift`) by one voxel costs a third of the Dice of each lesion while
   every lesion is still found.

Every function is deterministic (seeded where random) and returns boolean arrays
(``True`` = foreground) in array axis order, 1 voxel = 1 mm.

    >>> ref = disk(64, 12)
    >>> preds = same_dice_predictions(ref)
    >>> list(preds)
    ['shrunk', 'grown', 'shifted', 'hollow', 'partial + far blob']
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from segcli.metrics.morphology import count_holes

__all__ = [
    "count_holes",
    "disk",
    "hole_predictions",
    "same_dice_predictions",
    "shift",
    "tiny_lesions",
]

Mask = npt.NDArray[np.bool_]


def disk(size: int, radius: float, centre: tuple[float, float] | None = None) -> Mask:
    """A ``size × size`` mask of the voxels whose centre lies within ``radius`` of ``centre``
    (default: the image centre)."""
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    y, x = np.mgrid[:size, :size]
    return (y - cy) ** 2 + (x - cx) ** 2 <= radius**2


def _top(priority: npt.NDArray[np.floating], allowed: Mask, n: int) -> Mask:
    """The ``n`` allowed voxels of highest priority (ties: array order), as a mask."""
    flat = np.where(allowed.ravel(), priority.ravel(), -np.inf)
    order = np.argsort(-flat, kind="stable")[:n]
    out = np.zeros(allowed.size, dtype=bool)
    out[order] = True
    return out.reshape(allowed.shape)


def _dice(a: Mask, b: Mask) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def shift(mask: Mask, offset: tuple[int, ...]) -> Mask:
    """``mask`` moved by ``offset`` voxels per axis; what leaves the image is lost (no wrap)."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for n, o in zip(mask.shape, offset, strict=True):
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def same_dice_predictions(ref: Mask, dice: float = 0.6) -> dict[str, Mask]:
    """Five predictions of ``ref`` with Dice ≈ ``dice`` (within a voxel or two) and different
    shapes.

    * ``shrunk``: the deepest voxels of ``ref`` (a concentric erosion): inside, boundary close.
    * ``grown``: ``ref`` plus the nearest outside voxels (a concentric dilation).
    * ``shifted``: ``ref`` moved by the in-plane offset whose Dice is closest to ``dice``.
    * ``hollow``: the outermost voxels of ``ref`` (a band along its boundary, empty inside).
    * ``partial + far blob``: part of ``ref`` plus a false-positive blob in a corner.

    Args:
        ref: 2-D boolean reference, well inside the image (room for ``grown`` and a corner blob).
        dice: the Dice every prediction is built to have (0 < dice < 1).

    Returns:
        name → boolean prediction of ``ref``'s shape.
    """
    n_ref = int(ref.sum())
    inside = ndimage.distance_transform_edt(ref)
    outside = ndimage.distance_transform_edt(~ref)
    subset = round(dice * n_ref / (2 - dice))  # |P| for P ⊂ R: 2|P| / (|P| + |R|) = dice
    superset = round((2 / dice - 1) * n_ref)  # |P| for R ⊂ P
    out = {
        "shrunk": _top(inside, ref, subset),
        "grown": ref | _top(-outside, ~ref, superset - n_ref),
        "hollow": _top(-inside, ref, subset),
    }
    offsets = [(dy, dx) for dy in range(0, 16) for dx in range(0, 16)]
    best = min(offsets, key=lambda o: (abs(_dice(shift(ref, o), ref) - dice), o))
    out["shifted"] = shift(ref, best)
    # keep a = dice·|R| voxels of ref (its left part) and add a blob of b voxels far away:
    # 2a / (a + b + |R|) = dice  ⇒  b = 2a/dice − a − |R|
    kept = round(dice * n_ref)
    blob = round(2 * kept / dice - kept - n_ref)
    cols = np.broadcast_to(np.arange(ref.shape[1], dtype=float), ref.shape)
    part = _top(-cols, ref, kept)
    corner = np.zeros_like(ref)
    corner[-1, -1] = True
    near_corner = -ndimage.distance_transform_edt(~corner)
    out["partial + far blob"] = part | _top(near_corner, ~ref, blob)
    order = ("shrunk", "grown", "shifted", "hollow", "partial + far blob")
    return {name: out[name] for name in order}


def hole_predictions(ref: Mask) -> dict[str, Mask]:
    """A perfect copy of ``ref`` and three copies with holes.

    * ``perfect``: ``ref`` itself.
    * ``hole near the outline``: one voxel removed one voxel inside the top of ``ref``'s
      outline (the outline stays whole).
    * ``four holes near the outline``: the same at the top, bottom, left and right.
    * ``central hole``: a disk of radius ``r/4`` removed at the centre (``r``: the radius of
      a disk of ``ref``'s area).

    Args:
        ref: 2-D boolean reference without holes (e.g. :func:`disk`).

    Raises:
        ValueError: ``ref`` is too small or too thin for a hole strictly inside its outline.
    """
    inside = ndimage.distance_transform_edt(ref)
    cy, cx = (int(round(c)) for c in ndimage.center_of_mass(ref))
    column, row = np.flatnonzero(ref[:, cx]), np.flatnonzero(ref[cy, :])
    top = (int(column[0]) + 1, cx)
    bottom = (int(column[-1]) - 1, cx)
    left, right = (cy, int(row[0]) + 1), (cy, int(row[-1]) - 1)
    one = ref.copy()
    one[top] = False
    four = ref.copy()
    for point in (top, bottom, left, right):
        four[point] = False
    radius = np.sqrt(ref.sum() / np.pi)
    central = ref & ~disk(ref.shape[0], radius / 4, centre=(cy, cx))
    if min(inside[p] for p in (top, bottom, left, right)) <= 1:
        raise ValueError("ref needs flat sides at least 3 voxels wide (e.g. a disk of radius 4+)")
    return {
        "perfect": ref.copy(),
        "hole near the outline": one,
        "four holes near the outline": four,
        "central hole": central,
    }


def tiny_lesions(
    size: int = 128, count: int = 30, lesion: int = 3, spacing: int = 10, seed: int = 0
) -> Mask:
    """``count`` square ``lesion × lesion`` lesions on a jittered grid, at least
    ``spacing − lesion − 2`` voxels apart (so a shift of a few voxels never merges two).

    Raises:
        ValueError: the grid of ``size`` does not hold ``count`` lesions.
    """
    rng = np.random.default_rng(seed)
    cells = [
        (y, x) for y in range(2, size - spacing, spacing) for x in range(2, size - spacing, spacing)
    ]
    if len(cells) < count:
        raise ValueError(f"{count} lesions do not fit a {size}×{size} image at spacing {spacing}")
    chosen = rng.choice(len(cells), size=count, replace=False)
    out = np.zeros((size, size), dtype=bool)
    for index in sorted(chosen.tolist()):
        y, x = cells[index]
        jy, jx = rng.integers(0, spacing - lesion - 1, size=2)
        out[y + jy : y + jy + lesion, x + jx : x + jx + lesion] = True
    return out
