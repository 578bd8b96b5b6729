"""What ``segcli evaluate`` writes and prints: the metric CSVs, the postprocessing CSV, the tables.

    >>> from segcli.engine.metrics_output import print_summary, write_metric_csvs
    >>> write_metric_csvs(Path("metrics.csv"), Path("metrics_summary.csv"), cases, metrics, summary)
    >>> print_summary(result)

Files (SPEC.md): ``FILE.csv`` has one row per case and label (``case,label,<metrics>``),
``FILE_summary.csv`` one row per label and metric (:data:`SUMMARY_COLUMNS`),
``FILE_postprocessing.csv`` one row per step and label (:data:`POSTPROCESSING_COLUMNS`).  NaN
values are written as empty cells, integers without a decimal point, other floats with
``repr`` (all digits).  Every file is written whole or not at all
(:func:`segcli.atomic.atomic_open`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from segcli.atomic import atomic_open
from segcli.engine.runtime import console, info
from segcli.errors import DataError
from segcli.metrics import METRICS, LabelResult
from segcli.metrics.postprocessing_gain import StepComparison
from segcli.metrics.stray import StrayLabel
from segcli.metrics.summary import SUMMARY_COLUMNS, SummaryRow

__all__ = [
    "EvaluationResult",
    "stray_warnings",
    "POSTPROCESSING_COLUMNS",
    "postprocessing_csv_path",
    "print_comparison",
    "print_summary",
    "write_comparison_csv",
    "write_evaluation_meta",
    "write_metric_csvs",
]


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`segcli.engine.evaluate.evaluate_folders` computed and wrote.

    Attributes:
        output_csv: the per-(case, label) CSV.
        summary_csv: the per-(label, metric) summary CSV.
        metrics: metric columns, in order.
        labels: labels scored.
        label_names: label → name from dataset.json (may be empty).
        cases: case → label → :class:`~segcli.metrics.LabelResult`, cases sorted by name.
        summary: the summary rows.
        overlays: overlay PNGs written (empty without ``overlays_dir``).
        postprocessing: mean Dice per (step, label) before / after each postprocessing step
            (empty unless ``postprocessing`` steps were given).
        stray: case → prediction values outside ``labels`` that no reference contains and
            dataset.json does not name (only when the labels were given by ``--labels``, the
            spec or dataset.json); they have CSV rows (false alarms), no summary rows.
    """

    output_csv: Path
    summary_csv: Path
    metrics: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: dict[int, str]
    cases: dict[str, dict[int, LabelResult]]
    summary: list[SummaryRow]
    overlays: tuple[Path, ...] = ()
    postprocessing: tuple[StepComparison, ...] = ()
    stray: dict[str, tuple[StrayLabel, ...]] = field(default_factory=dict)
    #: region names when regions were scored (``labels`` are then region numbers 1..K)
    regions: tuple[str, ...] = ()

    @property
    def values(self) -> dict[str, dict[int, dict[str, float]]]:
        """``{case: {label: {metric: value}}}``."""
        return {
            case: {label: dict(result.values) for label, result in per_label.items()}
            for case, per_label in self.cases.items()
        }

    def statuses(self, label: int) -> dict[str, int]:
        """How many cases are ``both``, ``missed``, ``false_alarm`` or ``absent`` for ``label``."""
        counts = {"both": 0, "missed": 0, "false_alarm": 0, "absent": 0}
        for per_label in self.cases.values():
            counts[per_label[label].status] += 1
        return counts


POSTPROCESSING_COLUMNS = ("step", "label", "dice_before", "dice_after", "delta", "keep", "n")

_REASONS = {
    "missed": "missed (reference present, prediction empty)",
    "false_alarm": "false alarm (prediction present, reference empty)",
}


def _cell(value: float) -> str:
    if math.isnan(value):
        return ""
    return (
        str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
    )


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- files


def write_metric_csvs(
    output_csv: Path,
    summary_csv: Path,
    cases: dict[str, dict[int, LabelResult]],
    metrics: tuple[str, ...],
    summary: list[SummaryRow],
    extra: dict[str, tuple[LabelResult, ...]] | None = None,
    label_text: dict[int, str] | None = None,
) -> None:
    """Write the per-case and the summary CSV; both are renamed into place only once both
    are complete.  ``extra``: case → rows of labels outside the scored set (stray labels),
    written after that case's rows.  ``label_text``: what the ``label`` column shows instead
    of the number (region names when regions were scored).

    Raises:
        DataError: the folder cannot be created or a file cannot be written (naming it).
    """
    try:
        output_csv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{output_csv.parent}: cannot create the output folder ({exc.strerror})"
        ) from None
    extra = extra or {}
    text = label_text or {}

    def _label(label: int) -> int | str:
        return text.get(label, label)

    per_case = (
        [case, _label(label), *(_cell(result.values[m]) for m in metrics)]
        for case, per_label in cases.items()
        for label, result in (*per_label.items(), *((r.label, r) for r in extra.get(case, ())))
    )
    per_label = (
        [_label(row.label), row.metric, *(_cell(v) for v in row.as_tuple()[2:7]), row.n, row.n_nan]
        for row in summary
    )
    # both are written before either is renamed; leaving the stack renames the per-case CSV
    # (entered last), then the summary
    with ExitStack() as stack:
        for target, header, rows in (
            (summary_csv, SUMMARY_COLUMNS, per_label),
            (output_csv, ("case", "label", *metrics), per_case),
        ):
            handle = stack.enter_context(atomic_open(target, "w", what="the metric CSVs"))
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)


def postprocessing_csv_path(output_csv: str | Path) -> Path:
    """``metrics.csv`` → ``metrics_postprocessing.csv``."""
    output_csv = Path(output_csv)
    return output_csv.with_name(f"{output_csv.stem}_postprocessing{output_csv.suffix or '.csv'}")


def write_comparison_csv(path: str | Path, rows: Sequence[StepComparison]) -> Path:
    """Write the rows (columns :data:`POSTPROCESSING_COLUMNS`) atomically; returns the path."""
    path = Path(path)
    with atomic_open(path, "w", what="the comparison") as handle:
        writer = csv.writer(handle)
        writer.writerow(POSTPROCESSING_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row.step,
                    row.label,
                    repr(row.dice_before),
                    repr(row.dice_after),
                    repr(row.delta),
                    str(row.keep).lower(),
                    row.n,
                ]
            )
    return path


def write_evaluation_meta(
    result: EvaluationResult,
    pred_dir: str | Path,
    ref_dir: str | Path,
    images_dir: str | Path | None,
    nsd_tolerance: float,
    spec_name: str | None,
) -> None:
    """Write ``<stem>_meta.json`` beside the CSV (:func:`segcli.report.data.write_meta`): where
    the label maps are, so ``segcli report`` finds them."""
    from segcli.io.dataset import pair_cases
    from segcli.io.images import read_geometry
    from segcli.report.data import write_meta

    first_ref = next(iter(pair_cases(pred_dir, ref_dir, list(result.cases)).values()))[1]
    write_meta(
        result.output_csv,
        pred_dir=pred_dir,
        ref_dir=ref_dir,
        images_dir=images_dir,
        metrics=result.metrics,
        labels=result.labels,
        label_names=result.label_names,
        nsd_tolerance=float(nsd_tolerance),
        voxels={
            case: {label: (r.ref_voxels, r.pred_voxels) for label, r in per.items()}
            for case, per in result.cases.items()
        },
        spec_name=spec_name,
        ndim=len(read_geometry(first_ref).size),
    )


# --------------------------------------------------------------------------- console


def print_summary(result: EvaluationResult) -> None:
    """Per label mean / median of each metric, and which cases the NaN-aware means left out."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{len(result.cases)} cases: mean / median per label",
        caption="NaN values are left out of the mean and median (n = values used); see below",
    )
    table.add_column("metric")
    for label in result.labels:
        name = result.label_names.get(label)
        head = (
            f"region {name}"
            if result.regions
            else f"label {label}" + (f" ({name})" if name else "")
        )
        table.add_column(escape(head), justify="right")
    rows = {(row.label, row.metric): row for row in result.summary}
    for metric in result.metrics:
        unit = METRICS.get(metric).unit
        cells = []
        for label in result.labels:
            row = rows[(label, metric)]
            n = f" (n={row.n})" if row.n_nan else ""
            cells.append(f"{_fmt(row.mean, 3)} / {_fmt(row.median, 3)}{n}")
        table.add_row(escape(metric + (f" [{unit}]" if unit else "")), *cells)
    console.print(table)
    for label in result.labels:
        what = f"region {result.label_names.get(label)}" if result.regions else f"label {label}"
        statuses = result.statuses(label)
        left_out = [
            f"{m} ({rows[(label, m)].n_nan})" for m in result.metrics if rows[(label, m)].n_nan
        ]
        if left_out:
            why = " and ".join(
                f"{statuses[k]} {_REASONS[k]}" for k in ("missed", "false_alarm") if statuses[k]
            )
            console.print(
                escape(
                    f"{what}: {why} in {len(result.cases)} cases; their NaN values are "
                    f"left out of the means of {', '.join(left_out)}"
                )
            )
        if statuses["absent"]:
            console.print(
                f"{what}: {statuses['absent']} case(s) have it in neither mask "
                "(scored as a perfect match: dice 1, distances 0)"
            )
    for line in stray_warnings(result):
        console.print(escape(line), style="yellow")
    info(escape(f"wrote {result.output_csv} and {result.summary_csv}"))
    if result.overlays:
        info(escape(f"wrote {len(result.overlays)} overlay(s) to {result.overlays[0].parent}"))


def print_comparison(rows: Sequence[StepComparison], label_names: dict[int, str]) -> None:
    """A rich table: step, label, mean Dice before → after, and nnU-Net's verdict."""
    from rich.markup import escape
    from rich.table import Table

    n = rows[0].n if rows else 0
    table = Table(
        title=f"postprocessing on {n} cases: mean Dice per label",
        caption="nnU-Net keeps a step for a label only if it raises the mean Dice",
    )
    for column, justify in (
        ("step", "left"),
        ("label", "left"),
        ("before", "right"),
        ("after", "right"),
        ("change", "right"),
        ("keep", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        name = label_names.get(row.label)
        table.add_row(
            escape(row.step),
            escape(f"{row.label}" + (f" ({name})" if name else "")),
            f"{row.dice_before:.4f}",
            f"{row.dice_after:.4f}",
            f"{row.delta:+.4f}",
            "[green]yes[/]" if row.keep else "no",
        )
    console.print(table)


def stray_warnings(result: EvaluationResult, shown: int = 5) -> list[str]:
    """One line per stray label value (see ``EvaluationResult.stray``): cases and volumes."""
    by_label: dict[int, list[tuple[str, StrayLabel]]] = {}
    for case, strays in result.stray.items():
        for stray in strays:
            by_label.setdefault(stray.label, []).append((case, stray))
    scored = ", ".join(str(k) for k in result.labels)
    lines = []
    for label, found in sorted(by_label.items()):
        where = [
            f"{case} ({s.pred_voxels} voxels / {s.pred_ml:.3g} mL predicted)"
            for case, s in found[:shown]
        ]
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        lines.append(
            f"warning: label {label} is not among the labels scored ({scored}) but appears in "
            f"{len(found)} case(s): {'; '.join(where)}{more}; its rows are in "
            f"{result.output_csv.name}, not in the summary"
        )
    return lines
