"""The metric pitfalls of a run, found in its data and stated in words.

Each check returns plain sentences (no HTML) for the report's "Pitfalls" section; a check that
cannot run (a column or the label maps are missing) says so instead of staying silent.

    >>> for finding in find_pitfalls(run, scan):
    ...     finding.title, finding.text
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from segcli.report.data import Run

__all__ = ["Finding", "MapScan", "case_status", "find_pitfalls", "scan_maps"]

_DISTANCES = ("hd", "hd95", "assd", "masd")


@dataclass(frozen=True)
class Finding:
    """One pitfall: a short title, the explanation, and the cases it concerns (may be empty)."""

    title: str
    text: str
    cases: tuple[str, ...] = ()


@dataclass
class MapScan:
    """What only the label maps show (filled by :func:`scan_maps`; ``done`` False otherwise).

    Attributes:
        done: whether the label maps were read.
        gap: why not (or which cases could not be read).
        holes: ``{label: [case, ...]}``: the prediction has enclosed holes the reference lacks.
        stray: ``{value: [case, ...]}``: values in predictions that no reference contains.
    """

    done: bool = False
    gap: str = ""
    holes: dict[int, list[str]] = field(default_factory=dict)
    stray: dict[int, list[str]] = field(default_factory=dict)


def _holes(mask: np.ndarray) -> int:
    """Voxels enclosed by ``mask`` (inside its filled shape but not in it), on its bounding box."""
    from scipy import ndimage

    if not mask.any():
        return 0
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = np.pad(mask[box], 1)
    return int((ndimage.binary_fill_holes(crop) & ~crop).sum())


def scan_maps(run: Run) -> MapScan:
    """Read every case's label maps once: holes per label, and stray prediction values.

    A missing folder or file is not an error: the scan reports the gap.
    """
    from segcli.io.images import read_label
    from segcli.report.overlay import find_case_file

    if run.pred_dir is None or run.ref_dir is None:
        return MapScan(
            gap="the prediction and reference folders are unknown (no sidecar, no --pred/--ref)"
        )
    if not run.pred_dir.is_dir() or not run.ref_dir.is_dir():
        return MapScan(gap=f"the label map folders are gone ({run.pred_dir}, {run.ref_dir})")
    scan = MapScan(done=True)
    ref_values: set[int] = set()
    pred_values: dict[int, list[str]] = {}
    unread: list[str] = []
    for case in run.cases:
        pred_path, ref_path = find_case_file(run.pred_dir, case), find_case_file(run.ref_dir, case)
        if pred_path is None or ref_path is None:
            unread.append(case)
            continue
        pred, ref = read_label(pred_path)[0], read_label(ref_path)[0]
        ref_values.update(int(v) for v in np.unique(ref))
        for value in np.unique(pred):
            pred_values.setdefault(int(value), []).append(case)
        for label in run.labels:
            if _holes(pred == label) > _holes(ref == label):
                scan.holes.setdefault(label, []).append(case)
    scan.stray = {v: cases for v, cases in sorted(pred_values.items()) if v and v not in ref_values}
    if unread:
        scan.gap = f"{len(unread)} case(s) had no label map to read (first: {unread[0]})"
    return scan


def case_status(run: Run, case: str, label: int) -> str:
    """``both``, ``missed``, ``false_alarm``, ``absent`` or ``one empty`` (when the CSV alone
    cannot tell which) for one case and label."""
    counts = run.voxels(case, label)
    row = run.values[case][label]
    if counts is None and "vol_ref" in row and "vol_pred" in row:
        counts = (int(row["vol_ref"] > 0), int(row["vol_pred"] > 0))
    if counts is not None:
        ref, pred = counts
        if ref and pred:
            return "both"
        return "missed" if ref else ("false_alarm" if pred else "absent")
    distances = [row[m] for m in _DISTANCES if m in row]
    if any(math.isnan(v) for v in distances):
        return "one empty"
    return "both"


def _names(cases: list[str], limit: int = 6) -> str:
    shown = ", ".join(cases[:limit])
    return shown + (f" and {len(cases) - limit} more" if len(cases) > limit else "")


def find_pitfalls(run: Run, scan: MapScan) -> list[Finding]:
    """Every pitfall of ``run`` (see the issue's list), in a fixed order."""
    out: list[Finding] = []
    n = len(run.cases)
    for label in run.labels:
        title = run.label_title(label)
        statuses = {case: case_status(run, case, label) for case in run.cases}
        absent = [c for c, s in statuses.items() if s == "absent"]
        if absent:
            out.append(
                Finding(
                    f"{title}: structure in neither mask",
                    f"{len(absent)} of {n} cases have {title} in neither the reference nor the "
                    "prediction. They are scored as a perfect match (Dice 1, NSD 1, distances 0) "
                    "and raise every mean; judge the label on the other cases too.",
                    tuple(absent),
                )
            )
        for metric in run.metrics:
            column = np.array(run.column(label, metric))
            left = [c for c, v in zip(run.cases, column, strict=True) if math.isnan(v)]
            if not left:
                continue
            kinds = {
                s: sum(statuses[c] == s for c in left)
                for s in ("missed", "false_alarm", "one empty")
            }
            why = (
                ", ".join(
                    f"{count} {text}"
                    for key, text in (
                        ("missed", "missed (reference present, prediction empty)"),
                        ("false_alarm", "false alarm (prediction present, reference empty)"),
                        ("one empty", "with exactly one mask empty"),
                    )
                    if (count := kinds[key])
                )
                or f"{len(left)} undefined"
            )
            out.append(
                Finding(
                    f"{title}: {metric} left out for {len(left)} case(s)",
                    f"{metric} is undefined where exactly one mask is empty: {why}. These cases "
                    f"are left out of the {metric} mean, which therefore hides them; Dice "
                    "counts them as 0.",
                    tuple(left),
                )
            )
        out.extend(_small(run, label, title))
        out.extend(_good_dice_bad_hd(run, label, title))
        if "cc_pred" in run.metrics and "cc_ref" in run.metrics:
            extra = [
                c
                for c in run.cases
                if run.values[c][label]["cc_pred"] > run.values[c][label]["cc_ref"]
            ]
            if extra:
                out.append(
                    Finding(
                        f"{title}: extra components in {len(extra)} case(s)",
                        "The prediction has more connected components than the reference "
                        "(stray blobs or a structure broken in pieces). Dice barely moves for a "
                        "small blob; HD and the component counts show it.",
                        tuple(extra),
                    )
                )
        if "lesion_fp" in run.metrics:
            alarms = [c for c in run.cases if run.values[c][label]["lesion_fp"] > 0]
            if alarms:
                out.append(
                    Finding(
                        f"{title}: false-alarm components in {len(alarms)} case(s)",
                        "The prediction has components that touch no reference component "
                        "(lesion_fp > 0). A small false alarm barely moves Dice, and in a case "
                        "whose reference is empty it is scored by Dice 0 and NaN distances.",
                        tuple(alarms),
                    )
                )
        if scan.done and scan.holes.get(label):
            holes = scan.holes[label]
            out.append(
                Finding(
                    f"{title}: holes in {len(holes)} prediction(s)",
                    "The prediction has enclosed holes the reference does not have. Distance "
                    "metrics measure boundaries only and barely see a hole; overlap and a "
                    "look at the overlay do.",
                    tuple(holes),
                )
            )
    for value, rows in sorted(run.extra.items()):
        if scan.done and value in scan.stray:
            continue  # stated below, from the label maps
        out.append(
            Finding(
                f"label {value} predicted but in no reference",
                f"The CSV has rows for label {value} in {len(rows)} case(s) only: evaluate "
                "writes them for a prediction value no reference has. These voxels are false "
                "positives that no scored label's metrics count.",
                tuple(rows),
            )
        )
    if scan.done:
        for value, cases in scan.stray.items():
            out.append(
                Finding(
                    f"label {value} predicted but in no reference",
                    f"{len(cases)} prediction(s) contain label value {value}, which no reference "
                    "has; evaluate scores only the reference labels, so these voxels count "
                    "nowhere unless you look.",
                    tuple(cases),
                )
            )
    if not scan.done or scan.gap:
        out.append(
            Finding(
                "not checked: holes and stray labels",
                f"These checks read the label maps: {scan.gap}.",
            )
        )
    return out


def _small(run: Run, label: int, title: str) -> list[Finding]:
    """Labels whose typical structure is so small that one voxel of boundary moves Dice a lot."""
    sizes = [run.voxels(c, label) for c in run.cases]
    ref_sizes = [s[0] for s in sizes if s and s[0] > 0]
    if not ref_sizes:
        return []
    ndim = 3 if run.meta.get("ndim", 3) == 3 else 2
    median = float(np.median(ref_sizes))
    # a ball (disc) of this volume; a one-voxel dilation of it scores Dice ~ 1 / (1 + d / (2 r))
    radius = (3 * median / (4 * math.pi)) ** (1 / 3) if ndim == 3 else math.sqrt(median / math.pi)
    dice_one_voxel = 1.0 / (1.0 + ndim / (2.0 * radius))
    if dice_one_voxel >= 0.9:
        return []
    return [
        Finding(
            f"{title}: small structures",
            f"The median reference structure has {median:.0f} voxels (a "
            f"{'ball' if ndim == 3 else 'disc'} of radius {radius:.1f} voxels): a prediction one voxel too wide all round already scores "
            f"Dice {dice_one_voxel:.2f}. Dice differences of a few points are within this; for "
            "many small lesions, look at lesion-wise detection (lesion_f1).",
        )
    ]


def _good_dice_bad_hd(run: Run, label: int, title: str) -> list[Finding]:
    if "dice" not in run.metrics or "hd95" not in run.metrics:
        return []
    dice = np.array(run.column(label, "dice"))
    hd95 = np.array(run.column(label, "hd95"))
    finite = hd95[~np.isnan(hd95)]
    if finite.size < 4:
        return []
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    limit = max(q3 + 1.5 * (q3 - q1), 2.0 * median)
    dice_median = float(np.nanmedian(dice))
    cases = [
        c
        for c, d, h in zip(run.cases, dice, hd95, strict=True)
        if not math.isnan(h) and d >= dice_median and h > limit
    ]
    if not cases:
        return []
    return [
        Finding(
            f"{title}: good Dice, bad HD95 in {len(cases)} case(s)",
            f"These cases have Dice at or above the median ({dice_median:.3f}) but HD95 above "
            f"{limit:.2f} mm (an outlier among this label's cases): a stray blob or a shape "
            "error far from the structure, which Dice cannot see.",
            tuple(cases),
        )
    ]
