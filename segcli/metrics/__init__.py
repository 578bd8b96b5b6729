"""Segmentation metrics: the ``METRICS`` registry and :func:`evaluate_case`.

    >>> import numpy as np
    >>> from segcli.metrics import evaluate_case
    >>> ref = np.zeros((32, 32), np.uint8); ref[8:20, 8:20] = 1
    >>> pred = np.roll(ref, 2, axis=1)
    >>> evaluate_case(pred, ref, spacing=(0.8, 0.8), metrics=["dice", "hd95"])
    {1: {'dice': 0.833..., 'hd95': 1.6}}

Definitions, units and empty-mask conventions are those of SPEC.md ("Metrics"); each metric's
function documents its own.  Per label, :func:`evaluate_case` crops both masks to the bounding
box of their union (all labels' boxes come from one ``scipy.ndimage.find_objects`` pass per
array), counts overlap once, extracts boundaries and the two directed distance arrays once
(:class:`~segcli.metrics.surface.SurfaceDistances`) only if a requested metric needs them, labels
connected components once only if needed, and derives every requested metric from those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from segcli.metrics import morphology, overlap, surface
from segcli.metrics.morphology import ComponentCounts, count_components
from segcli.metrics.overlap import OverlapCounts, count_overlap
from segcli.metrics.surface import SurfaceDistances, surface_distances
from segcli.registry import Registry

__all__ = [
    "ALL_METRICS",
    "METRICS",
    "ComponentCounts",
    "LabelResult",
    "Metric",
    "OverlapCounts",
    "SurfaceDistances",
    "evaluate_case",
    "evaluate_labels",
    "resolve_metrics",
]

Needs = Literal["overlap", "distances", "components"]


@dataclass(frozen=True)
class Metric:
    """One registry entry.

    Attributes:
        name: registry key = YAML value = CSV column.
        function: computes the value from the intermediate named by ``needs``.
        needs: ``"overlap"`` (:class:`OverlapCounts`, which carries the voxel volume),
            ``"distances"`` (:class:`SurfaceDistances`, built with the spacing) or
            ``"components"`` (:class:`ComponentCounts`).
        uses_tolerance: ``function`` takes the NSD tolerance (mm) as second argument.
        unit: unit of the value, for tables (``""`` when dimensionless).
    """

    name: str
    function: Callable[..., float]
    needs: Needs
    uses_tolerance: bool = False
    unit: str = ""

    @property
    def needs_distances(self) -> bool:
        return self.needs == "distances"


METRICS: Registry[Metric] = Registry("metric")


def _register(
    name: str, function: Callable[..., float], needs: Needs, unit: str = "", **kw: bool
) -> None:
    METRICS.register(name)(Metric(name, function, needs, unit=unit, **kw))
    _REGISTERED.append(name)


_REGISTERED: list[str] = []


_register("dice", overlap.dice, "overlap")
_register("iou", overlap.iou, "overlap")
_register("precision", overlap.precision, "overlap")
_register("recall", overlap.recall, "overlap")
_register("hd", surface.hd, "distances", "mm")
_register("hd95", surface.hd95, "distances", "mm")
_register("assd", surface.assd, "distances", "mm")
_register("masd", surface.masd, "distances", "mm")
_register("nsd", surface.nsd, "distances", uses_tolerance=True)
_register("vol_ref", morphology.vol_ref, "overlap", "mL")
_register("vol_pred", morphology.vol_pred, "overlap", "mL")
_register("cc_ref", morphology.cc_ref, "components")
_register("cc_pred", morphology.cc_pred, "components")
_register("lesion_tp", morphology.lesion_tp, "components")
_register("lesion_fn", morphology.lesion_fn, "components")
_register("lesion_fp", morphology.lesion_fp, "components")
_register("lesion_f1", morphology.lesion_f1, "components")

#: Every metric in SPEC.md's column order (the default set of :func:`evaluate_case`):
#: the registration order above.
ALL_METRICS: tuple[str, ...] = tuple(_REGISTERED)


@dataclass(frozen=True)
class LabelResult:
    """The metrics of one label of one case, with the voxel counts that explain NaNs.

    Attributes:
        label: the label value.
        values: metric name → value, in the order asked.
        ref_voxels: reference voxels of this label.
        pred_voxels: predicted voxels of this label.
    """

    label: int
    values: dict[str, float]
    ref_voxels: int
    pred_voxels: int

    @property
    def status(self) -> Literal["both", "missed", "false_alarm", "absent"]:
        """``both`` present; ``missed`` (reference only); ``false_alarm`` (prediction only);
        ``absent`` from both.  Distance metrics are NaN exactly for missed and false_alarm."""
        if self.ref_voxels and self.pred_voxels:
            return "both"
        if self.ref_voxels:
            return "missed"
        return "false_alarm" if self.pred_voxels else "absent"


def resolve_metrics(metrics: Iterable[str] | None) -> tuple[Metric, ...]:
    """Registry records for ``metrics`` (all of :data:`ALL_METRICS` when None), duplicates dropped.

    Raises:
        SpecError: an unknown name (the message lists the choices and the closest match).
    """
    names = ALL_METRICS if metrics is None else tuple(dict.fromkeys(metrics))
    return tuple(METRICS.get(name) for name in names)


def evaluate_case(
    pred: npt.ArrayLike,
    ref: npt.ArrayLike,
    spacing: Sequence[float],
    labels: Iterable[int] | None = None,
    metrics: Iterable[str] | None = None,
    nsd_tolerance: float = 1.0,
) -> dict[int, dict[str, float]]:
    """Compare two label maps label by label.

    Args:
        pred: predicted integer (or boolean) label map, 2D or 3D, 0 = background.
        ref: reference label map of the same shape.
        spacing: voxel size per axis in mm, same axis order as the arrays.
        labels: foreground labels to score (each ≥ 1); None = every non-zero value present in
            ``pred`` or ``ref``.  A label present in neither scores as two empty masks.
        metrics: metric names (see :data:`ALL_METRICS`); None = all, in SPEC order.
        nsd_tolerance: NSD tolerance τ in mm.

    Returns:
        ``{label: {metric: value}}``, labels ascending, metrics in the order asked.  Both masks
        empty → dice = iou = nsd = 1, distances 0; exactly one empty → dice = iou = nsd = 0 and
        distances NaN (see each metric's function for precision/recall).

    Raises:
        SpecError: unknown metric name.
        ValueError: shapes differ, non-integer or negative label values, bad spacing, labels or
            tolerance.
    """
    results = evaluate_labels(pred, ref, spacing, labels, metrics, nsd_tolerance)
    return {result.label: result.values for result in results}


def evaluate_labels(
    pred: npt.ArrayLike,
    ref: npt.ArrayLike,
    spacing: Sequence[float],
    labels: Iterable[int] | None = None,
    metrics: Iterable[str] | None = None,
    nsd_tolerance: float = 1.0,
) -> list[LabelResult]:
    """Like :func:`evaluate_case`, but one :class:`LabelResult` per label (with voxel counts).

    The engine uses the counts to report *why* a distance is NaN (missed structure or false
    alarm).  Arguments, conventions and errors as in :func:`evaluate_case`.
    """
    records = resolve_metrics(metrics)
    pred_map, ref_map, spacing_mm = _check_inputs(pred, ref, spacing)
    if not (np.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
        raise ValueError(f"nsd_tolerance must be a finite number >= 0 mm, got {nsd_tolerance}")
    wanted = None if labels is None else _check_labels(labels)
    max_label = 0 if wanted is None else max(wanted, default=0)
    if wanted == ():
        return []
    # One pass per array for every label's bounding box (slices for labels 1..max).
    pred_boxes = ndimage.find_objects(pred_map, max_label=max_label)
    ref_boxes = ndimage.find_objects(ref_map, max_label=max_label)
    if wanted is None:
        wanted = tuple(
            sorted(
                {i + 1 for i, box in enumerate(pred_boxes) if box is not None}
                | {i + 1 for i, box in enumerate(ref_boxes) if box is not None}
            )
        )
    needs = {record.needs for record in records}
    voxel_volume_mm3 = float(np.prod(spacing_mm))
    out = []
    for label in wanted:
        box = _union_box(_box(pred_boxes, label), _box(ref_boxes, label))
        if box is None:  # absent from both: score two empty masks
            pred_mask = ref_mask = np.zeros((1,) * pred_map.ndim, dtype=bool)
        else:
            pred_mask = pred_map[box] == label
            ref_mask = ref_map[box] == label
        counts = count_overlap(pred_mask, ref_mask, voxel_volume_mm3)
        inputs: dict[str, OverlapCounts | SurfaceDistances | ComponentCounts] = {"overlap": counts}
        if "distances" in needs:
            inputs["distances"] = surface_distances(pred_mask, ref_mask, spacing_mm)
        if "components" in needs:
            inputs["components"] = count_components(pred_mask, ref_mask)
        values = {
            record.name: float(
                record.function(inputs[record.needs], nsd_tolerance)
                if record.uses_tolerance
                else record.function(inputs[record.needs])
            )
            for record in records
        }
        out.append(LabelResult(label, values, counts.ref_voxels, counts.pred_voxels))
    return out


def _check_inputs(
    pred: npt.ArrayLike, ref: npt.ArrayLike, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    arrays = []
    for name, value in (("pred", pred), ("ref", ref)):
        array = np.asarray(value)
        if array.dtype == np.bool_:
            array = array.view(np.uint8)
        elif array.dtype.kind not in "iu":
            raise ValueError(
                f"{name} has dtype {array.dtype}; pass an integer label map "
                "(e.g. np.rint(x).astype(np.int32) for integer-valued floats)"
            )
        if array.ndim == 0:
            raise ValueError(f"{name} must be an array with at least one axis")
        if array.dtype.kind == "i" and array.size and array.min() < 0:
            raise ValueError(f"{name} has negative label values (min {array.min()})")
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"pred shape {arrays[0].shape} differs from ref shape {arrays[1].shape}")
    try:
        spacing_mm = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be a sequence of numbers, got {spacing!r}") from None
    if (
        len(spacing_mm) != arrays[0].ndim
        or not all(np.isfinite(spacing_mm))
        or min(spacing_mm) <= 0
    ):
        raise ValueError(
            f"spacing must have one positive value per axis ({arrays[0].ndim}), got {spacing_mm}"
        )
    return arrays[0], arrays[1], spacing_mm


def _check_labels(labels: Iterable[int]) -> tuple[int, ...]:
    out = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or label < 1:
            raise ValueError(f"labels must be integers >= 1 (0 is background), got {label!r}")
        out.append(int(label))
    return tuple(sorted(set(out)))


def _box(boxes: list[tuple[slice, ...] | None], label: int) -> tuple[slice, ...] | None:
    return boxes[label - 1] if label - 1 < len(boxes) else None


def _union_box(
    a: tuple[slice, ...] | None, b: tuple[slice, ...] | None
) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )
