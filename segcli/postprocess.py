"""Postprocessing of predicted label maps (``inference.postprocess``), one pure function per step.

    >>> from segcli.postprocess import postprocess_labels
    >>> cleaned = postprocess_labels(labels, largest_component=True, min_size=20, fill_holes=True)
    >>> keep_largest_component(labels == 1)          # one boolean mask
    >>> remove_small_components(labels == 2, 20)
    >>> fill_holes(labels == 3)

Connectivity is face connectivity (4 neighbours in 2-D, 6 in 3-D), as for the ``cc_*`` metrics.
Steps per foreground label, in this order: drop components under ``min_size`` voxels, keep only
the largest component, fill holes.  Removed voxels become background (0); holes are background
voxels enclosed by the label (other labels inside are left alone; a pocket enclosed by two
labels goes to the inner one), so labels never overwrite each other.  nnU-Net applies
``largest_component`` only to labels where it raised validation Dice —
``segcli evaluate --compare-postprocessing`` reports which those are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "STEPS",
    "fill_holes",
    "keep_largest_component",
    "postprocess_labels",
    "remove_small_components",
]

#: the step names (``inference.postprocess`` keys)
STEPS = ("min_size", "largest_component", "fill_holes")


def _structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, 1)


def keep_largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The largest face-connected component of ``mask`` (the lowest-numbered one on ties).

    Args:
        mask: boolean array of any dimension.

    Returns:
        A new boolean array; all False for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    components, count = ndimage.label(mask, structure=_structure(mask.ndim))
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def remove_small_components(mask: npt.NDArray[np.bool_], min_size: int) -> npt.NDArray[np.bool_]:
    """``mask`` without its face-connected components of fewer than ``min_size`` voxels.

    Args:
        mask: boolean array.
        min_size: smallest component kept, in voxels; 0 or 1 keeps everything.

    Raises:
        ValueError: ``min_size`` negative.
    """
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0 voxels, got {min_size}")
    mask = np.asarray(mask, dtype=bool)
    if min_size <= 1:
        return mask.copy()
    components, count = ndimage.label(mask, structure=_structure(mask.ndim))
    if count == 0:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


def fill_holes(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``mask`` with its holes filled: background regions not face-connected to the border.

    Fills in the full dimension (a 3-D cavity, not slice by slice); a region touching the
    image border is not a hole.
    """
    mask = np.asarray(mask, dtype=bool)
    return ndimage.binary_fill_holes(mask, structure=_structure(mask.ndim))


def postprocess_labels(
    labels: npt.NDArray[np.integer],
    *,
    largest_component: bool = False,
    min_size: int = 0,
    fill_holes: bool = False,
    only: Sequence[int] | None = None,
) -> np.ndarray:
    """Apply the enabled steps to every foreground label of an integer label map.

    Args:
        labels: integer label map ``(*spatial)``, 0 = background.
        largest_component: keep only each label's largest component.
        min_size: drop each label's components under this many voxels (0: off).
        fill_holes: fill each label's holes (background voxels only).
        only: restrict to these label values (default: every non-zero value present).

    Returns:
        A new label map of the same dtype; the input when no step is enabled.
    """
    labels = np.asarray(labels)
    if not (largest_component or min_size > 0 or fill_holes):
        return labels
    out = labels.copy()
    values = [int(v) for v in np.unique(labels) if v != 0]
    if only is not None:
        wanted = {int(k) for k in only}
        values = [v for v in values if v in wanted]
    for value in values:  # removals first: they only ever turn a label's voxels into background
        mask = out == value
        kept = remove_small_components(mask, min_size) if min_size > 0 else mask
        if largest_component:
            kept = keep_largest_component(kept)
        out[mask & ~kept] = 0
    if fill_holes:
        background = out == 0
        regions = [(value, _fill(out == value)) for value in values]
        # a background voxel enclosed by several labels goes to the innermost one (the label
        # whose filled region is smallest), so larger regions are painted first
        for value, region in sorted(regions, key=lambda item: -int(item[1].sum())):
            out[region & background] = value
    return out


# the parameter ``fill_holes`` shadows the function inside postprocess_labels
_fill = fill_holes
