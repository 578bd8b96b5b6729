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
    fits: list[tuple[LabelSummary, dict[str, object]]] = []
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
            fits.append((s, numbers))
    if fits:
        s, _ = max(fits, key=lambda item: max(item[0].largest_extent_voxels))
        others = f" and {len(fits) - 1} other label(s)" if len(fits) > 1 else ""
        out.append(
            Check(
                "receptive field",
                "ok",
                f"the largest object of {s.name} ({s.value}){others}, "
                f"{fmt_shape(s.largest_extent_voxels)} voxels, fits in the field "
                f"{fmt_shape(field)} and the patch {fmt_shape(patch)}",
                {"labels": {str(x.value): n for x, n in fits}},
            )
        )
    return out


def imbalance_checks(labels: Mapping[int, LabelSummary], loss: str = "dice_ce") -> list[Check]:
    """Foreground share per label and why the loss copes: one note (and a warning per label
    never present)."""
    present = {v: s for v, s in labels.items() if s.voxel_share > 0}
    out = []
    if present:
        shares = ", ".join(f"{s.name} {s.voxel_share:.2%}" for s in present.values())
        smallest = min(present.values(), key=lambda s: s.voxel_share)
        out.append(
            Check(
                "imbalance",
                "note",
                f"foreground share of the voxels: {shares}. {loss}'s Dice term averages "
                f"per-class Dice, so {smallest.name} ({smallest.voxel_share:.2%}) weighs as much "
                "as any other label, cross-entropy keeps the gradients smooth, and 33 % of the "
                "patches are centred on foreground",
                {"voxel_share": {str(v): s.voxel_share for v, s in present.items()}},
            )
        )
    for value, s in labels.items():
        if s.voxel_share == 0:
            out.append(
                Check(
                    f"imbalance: {s.name} ({value})",
                    "warning",
                    "never present in the training labels: nothing to learn",
                    {},
                )  # fmt: skip
            )
    return out


def typical_object_voxels(s: LabelSummary) -> float:
    """Median per-case volume over the median component count (voxels at the target spacing)."""
    return s.median_voxels_target / max(s.components_median, 1.0)


def small_structure_checks(labels: Mapping[int, LabelSummary]) -> tuple[list[Check], bool]:
    """Which labels are small structures; ``(checks, add lesion metrics)``."""
    small: dict[str, dict[str, float]] = {}
    reasons = []
    for value, s in labels.items():
        if s.cases_present == 0:
            continue
        typical = typical_object_voxels(s)
        if typical <= SMALL_VOXELS:
            reasons.append(f"{s.name} (typical object {typical:.0f} voxels)")
        elif s.components_median >= MANY_COMPONENTS:
            reasons.append(f"{s.name} ({s.components_median:g} components per case)")
        else:
            continue
        small[str(value)] = {
            "typical_object_voxels": round(typical, 1),
            "smallest_component_voxels": round(s.smallest_voxels_target, 1),
            "components_median": s.components_median,
            "components_max": s.components_max,
        }
    if not small:
        return [], False
    message = (
        f"≤ {SMALL_VOXELS} voxels per object or ≥ {MANY_COMPONENTS} objects per case: "
        f"{', '.join(reasons)}. Dice on tiny objects is a detection problem (one missed object "
        f"costs a whole case's Dice), so {', '.join(LESION_METRICS)} are added to "
        "evaluation.metrics"
    )
    return [Check("small structures", "note", message, {"labels": small})], True
