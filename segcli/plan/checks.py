"""The lecture's checks on a plan: what nnU-Net does not tell you (pure functions).

    >>> from segcli.plan.checks import receptive_field_checks
    >>> receptive_field_checks((7, 7), (32, 32), summaries)   # the lecture's 7×7 network
    [Check(name='receptive field: lesion', level='warning', ...)]

* **Receptive field vs object size** — a voxel can only be classified by what its field
  covers; when the largest object of a label spans more voxels than the field along an axis,
  the network cannot see the whole object (the lecture's 7×7 vs 15×15 demo).  The field is
  :func:`segcli.receptive_field.analyse`'s analytic one.
* **Class imbalance** — the foreground share per label, and why ``dice_ce`` copes: its Dice
  term is computed per class and averaged, so a label covering 0.1 % of the voxels weighs as
  much as one covering 30 %, while cross-entropy keeps the gradients well-behaved; foreground
  oversampling puts a labelled voxel in a third of the patches.
* **Small structures** — when a label's typical object is :data:`SMALL_VOXELS` voxels or fewer,
  or a case has :data:`MANY_COMPONENTS` or more of them, Dice per case is dominated by whether
  each object was found at all: the plan adds the lesion-wise detection metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from segcli.plan.decision import Check, fmt_shape
from segcli.plan.fingerprint import LabelSummary

__all__ = [
    "LESION_METRICS",
    "MANY_COMPONENTS",
    "SMALL_VOXELS",
    "imbalance_checks",
    "receptive_field_checks",
    "small_structure_checks",
]

#: a typical object of at most this many voxels (at the target spacing) is a small structure
SMALL_VOXELS = 300
#: this many components per case (median over cases with the label) make a label lesion-like
MANY_COMPONENTS = 3
LESION_METRICS = ("lesion_tp", "lesion_fn", "lesion_fp", "lesion_f1")


def receptive_field_checks(
    field: Sequence[int], patch: Sequence[int], labels: Mapping[int, LabelSummary]
) -> list[Check]:
    """Compare the network's receptive field and the patch with each label's largest object.

    Args:
        field: analytic receptive field per axis (voxels at the target spacing).
        patch: training patch per axis (voxels).
        labels: per-label summaries at the target spacing.

    Returns:
        One check per label: ``warning`` when the field (or the patch) is smaller than the
        object along some axis, else ``ok``.
    """
    out = []
    for value, s in labels.items():
        extent = s.largest_extent_voxels
        if not any(extent):
            continue
        numbers = {
            "receptive_field": list(field),
            "patch": list(patch),
            "largest_object_voxels": list(extent),
            "largest_object_mm": [round(e, 2) for e in s.largest_extent_mm],
        }
        name = f"receptive field: {s.name} ({value})"
        short = [a for a in range(len(extent)) if field[a] < extent[a]]
        cut = [a for a in range(len(extent)) if patch[a] < extent[a]]
        obj = f"largest object {fmt_shape(extent)} voxels ({fmt_shape(numbers['largest_object_mm'])} mm)"
        if short:
            out.append(
                Check(
                    name,
                    "warning",
                    f"{obj} but the network sees {fmt_shape(field)}: along axis "
                    f"{', '.join(map(str, short))} a voxel cannot see the whole object "
                    "(deepen the network or coarsen the spacing)",
                    numbers,
                )
            )
        elif cut:
            out.append(
                Check(
                    name,
                    "warning",
                    f"{obj} is larger than the patch {fmt_shape(patch)} along axis "
                    f"{', '.join(map(str, cut))}: training never shows the whole object at once",
                    numbers,
                )
            )
        else:
            out.append(Check(name, "ok", f"{obj} fits in the field {fmt_shape(field)}", numbers))
    return out


def imbalance_checks(labels: Mapping[int, LabelSummary], loss: str = "dice_ce") -> list[Check]:
    """Foreground share per label and why the loss copes (a note per label)."""
    out = []
    for value, s in labels.items():
        share = s.voxel_share
        level = "note"
        why = (
            f"{share:.3%} of all voxels; {loss}'s Dice term averages per-class Dice, so this "
            "label weighs as much as any other whatever its share, and 33 % of patches are "
            "centred on foreground"
        )
        if share == 0:
            level, why = "warning", "never present in the training labels: nothing to learn"
        out.append(Check(f"imbalance: {s.name} ({value})", level, why,  # type: ignore[arg-type]
                         {"voxel_share": share, "cases_present": s.cases_present}))  # fmt: skip
    return out


def typical_object_voxels(s: LabelSummary) -> float:
    """Median per-case volume over the median component count (voxels at the target spacing)."""
    return s.median_voxels_target / max(s.components_median, 1.0)


def small_structure_checks(labels: Mapping[int, LabelSummary]) -> tuple[list[Check], bool]:
    """Which labels are small structures; ``(checks, add lesion metrics)``."""
    out = []
    small_any = False
    for value, s in labels.items():
        if s.cases_present == 0:
            continue
        typical = typical_object_voxels(s)
        numbers = {
            "typical_object_voxels": round(typical, 1),
            "smallest_component_voxels": round(s.smallest_voxels_target, 1),
            "components_median": s.components_median,
            "components_max": s.components_max,
        }
        small = typical <= SMALL_VOXELS
        many = s.components_median >= MANY_COMPONENTS
        if small or many:
            small_any = True
            reason = (
                f"a typical object has {typical:.0f} voxels (≤ {SMALL_VOXELS})"
                if small
                else f"{s.components_median:g} components per case (≥ {MANY_COMPONENTS})"
            )
            out.append(
                Check(
                    f"small structures: {s.name} ({value})",
                    "note",
                    f"{reason}: one missed object costs a whole case's Dice, so detection "
                    f"is reported too ({', '.join(LESION_METRICS)} added to evaluation.metrics)",
                    numbers,
                )
            )
    return out, small_any
