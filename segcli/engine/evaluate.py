"""``segcli evaluate``: score folders of predicted label maps against references.

    >>> from segcli.engine.evaluate import evaluate_folders
    >>> result = evaluate_folders("pred/", "data/labelsTs/", "metrics.csv", ["dice", "hd95"])
    >>> result.summary_csv                      # metrics_summary.csv, next to metrics.csv
    >>> result.values["case_001"][1]["dice"]    # {case: {label: {metric: value}}}

Steps: pair files by case name; read every pair's header and stop on the first geometry
mismatch before computing anything; evaluate cases (in worker processes, with a progress bar);
then write ``FILE.csv`` (one row per case and label: ``case,label,<metrics>``), its
``FILE_summary.csv`` (one row per label and metric: ``mean,std,median,min,max,n,n_nan``) and the
optional overlay PNGs.  Nothing is written unless every case was evaluated; each file appears
whole (temp file + ``os.replace``).  NaN values are written as empty cells.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcli.atomic import publish
from segcli.config.schema import EvaluationSpec, Experiment
from segcli.engine import distributed
from segcli.engine.overlays import overlay_slices, render_overlay
from segcli.engine.runtime import check_writable_folder, console, info, is_quiet, progress_bar
from segcli.errors import DataError, SegcliError, SpecError
from segcli.io.dataset import dataset_labels, group_images, list_image_files
from segcli.io.images import (
    IMAGE_SUFFIXES,
    check_same_grid,
    read_geometry,
    read_image,
    read_label,
    strip_suffix,
)
from segcli.metrics import METRICS, LabelResult, evaluate_labels, resolve_metrics
from segcli.metrics.summary import SUMMARY_COLUMNS, SummaryRow, summarize

__all__ = [
    "CaseResult",
    "EvaluationResult",
    "evaluate_command",
    "evaluate_folders",
    "overlay_slices",
    "pair_cases",
]

_CHANNEL_ZERO = re.compile(r"^(?P<case>.+)_0000$")
#: Metrics computed for every case when overlays are drawn (their titles show them).
_OVERLAY_METRICS = ("dice", "hd95")
_REASONS = {
    "missed": "missed (reference present, prediction empty)",
    "false_alarm": "false alarm (prediction present, reference empty)",
}


@dataclass(frozen=True)
class CaseResult:
    """The per-label results of one case (labels ascending)."""

    case: str
    labels: tuple[LabelResult, ...]


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_folders` computed and wrote.

    Attributes:
        output_csv: the per-(case, label) CSV.
        summary_csv: the per-(label, metric) summary CSV.
        metrics: metric columns, in order.
        labels: labels scored.
        label_names: label → name from dataset.json (may be empty).
        cases: case → label → :class:`~segcli.metrics.LabelResult`, cases sorted by name.
        summary: the summary rows.
        overlays: overlay PNGs written (empty without ``overlays_dir``).
    """

    output_csv: Path
    summary_csv: Path
    metrics: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: dict[int, str]
    cases: dict[str, dict[int, LabelResult]]
    summary: list[SummaryRow]
    overlays: tuple[Path, ...] = ()

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


@dataclass(frozen=True)
class _Task:
    case: str
    pred: Path
    ref: Path
    image: Path | None
    labels: tuple[int, ...] | None
    metrics: tuple[str, ...]
    nsd_tolerance: float
    overlay: Path | None = None


# --------------------------------------------------------------------------- pairing


def _case_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    files = list_image_files(folder)
    if not files:
        raise DataError(f"{folder}: no {what} label maps found ({', '.join(IMAGE_SUFFIXES)})")
    out: dict[str, Path] = {}
    for path in files:
        stem = strip_suffix(path.name)
        if stem in out:
            raise DataError(
                f"{folder}: two {what} files for case '{stem}' ({out[stem].name}, {path.name})"
            )
        out[stem] = path
    return out


def _unchannelled(stem: str) -> str:
    match = _CHANNEL_ZERO.match(stem)
    return match["case"] if match else stem


def pair_cases(pred_dir: str | Path, ref_dir: str | Path) -> dict[str, tuple[Path, Path]]:
    """Pair prediction and reference files by case name: ``{case: (pred, ref)}``, sorted.

    File names are compared without their image suffix; a name that only matches once a
    ``_0000`` channel suffix is removed (on either side) is paired too, and the case takes the
    name without it.

    Raises:
        DataError: a folder is missing or empty, or a file has no partner (names the case).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    preds = _case_files(pred_dir, "prediction")
    refs = _case_files(ref_dir, "reference")
    pairs: dict[str, tuple[Path, Path]] = {
        stem: (preds[stem], refs[stem]) for stem in preds.keys() & refs.keys()
    }
    loose_preds = {_unchannelled(s): p for s, p in preds.items() if s not in refs}
    loose_refs = {_unchannelled(s): p for s, p in refs.items() if s not in preds}
    for case in sorted(loose_preds.keys() & loose_refs.keys()):
        if case in pairs:
            raise DataError(
                f"case '{case}': more than one file pairs with it "
                f"({pred_dir}: {loose_preds[case].name}, {ref_dir}: {loose_refs[case].name})"
            )
        pairs[case] = (loose_preds.pop(case), loose_refs.pop(case))
    for missing, where, other in (
        (loose_preds, ref_dir, "prediction"),
        (loose_refs, pred_dir, "reference"),
    ):
        if missing:
            names = sorted(missing)
            partner = "reference" if other == "prediction" else "prediction"
            more = ""
            if len(names) > 1:
                shown = ", ".join(names[1:4]) + (", ..." if len(names) > 4 else "")
                more = f" (and {len(names) - 1} more: {shown})"
            raise DataError(
                f"case '{names[0]}': {other} {missing[names[0]].name} has no {partner} in "
                f"{where}{more}; every prediction needs a reference with the same case name"
            )
    return dict(sorted(pairs.items()))


def _pair_images(images_dir: Path, cases: Sequence[str]) -> dict[str, Path]:
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: images folder not found")
    grouped = group_images(list_image_files(images_dir), images_dir)
    by_name = {**{_unchannelled(k): v for k, v in grouped.items()}, **grouped}
    missing = [case for case in cases if case not in by_name]
    if missing:
        raise DataError(
            f"case '{missing[0]}': no image in {images_dir} for the overlay "
            f"(expected {missing[0]}_0000.nii.gz or {missing[0]}.nii.gz)"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return {case: by_name[case][0] for case in cases}


def _check_headers(pairs: dict[str, tuple[Path, Path]], images: dict[str, Path] | None) -> None:
    """Every pair (and image) on one grid, from headers only; raise on the first problem."""
    for case, (pred, ref) in pairs.items():
        try:
            pred_geometry, ref_geometry = read_geometry(pred), read_geometry(ref)
            image_geometry = read_geometry(images[case]) if images else None
        except DataError as exc:
            raise DataError(f"case '{case}': {exc}") from None
        check_same_grid(
            pred_geometry,
            ref_geometry,
            f"case '{case}': prediction {pred.name} vs reference {ref.name}",
        )
        if image_geometry is not None and images is not None:
            check_same_grid(
                image_geometry,
                ref_geometry,
                f"case '{case}': image {images[case].name} vs reference {ref.name}",
            )


# --------------------------------------------------------------------------- one case


def _evaluate_one(task: _Task) -> CaseResult:
    """Read one pair, score it and draw its overlay (runs in a worker process)."""
    try:
        pred, pred_geometry = read_label(task.pred)
        ref, ref_geometry = read_label(task.ref)
    except DataError as exc:
        raise DataError(f"case '{task.case}': {exc}") from None
    check_same_grid(
        pred_geometry,
        ref_geometry,
        f"case '{task.case}': prediction {task.pred.name} vs reference {task.ref.name}",
    )
    names = task.metrics
    if task.overlay is not None:
        names = tuple(dict.fromkeys(task.metrics + _OVERLAY_METRICS))
    results = evaluate_labels(
        pred, ref, ref_geometry.spacing, task.labels, names, task.nsd_tolerance
    )
    if task.overlay is not None:
        image = None
        if task.image is not None:
            try:
                image = read_image(task.image)[0]
            except DataError as exc:
                raise DataError(f"case '{task.case}': {exc}") from None
        render_overlay(task.overlay, task.case, pred, ref, ref_geometry.spacing, results, image)
    trimmed = tuple(
        LabelResult(r.label, {m: r.values[m] for m in task.metrics}, r.ref_voxels, r.pred_voxels)
        for r in results
    )
    return CaseResult(task.case, trimmed)


def _absent(label: int, metrics: tuple[str, ...], ndim: int) -> LabelResult:
    """The result of a label present in neither mask (scored by the same code path)."""
    empty = np.zeros((1,) * ndim, dtype=np.uint8)
    return evaluate_labels(empty, empty, (1.0,) * ndim, [label], metrics)[0]


def _temp_path(target: Path) -> Path:
    """A fresh hidden name next to ``target`` (same file system, so os.replace is atomic)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- folders


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    output_csv: str | Path,
    metrics: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    nsd_tolerance: float = 1.0,
    workers: int | None = None,
    overlays_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    spec_name: str | None = None,
) -> EvaluationResult:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    Args:
        pred_dir: folder of predicted label maps.
        ref_dir: folder of reference label maps (paired by case name, see :func:`pair_cases`).
        output_csv: per-(case, label) CSV to write; the summary goes to ``<stem>_summary.csv``.
        metrics: metric names in column order; None = the spec default
            (dice, iou, hd95, assd, nsd).
        labels: labels to score; None = the reference folder's (or its parent's) dataset.json
            labels, else every non-zero value found in any reference or prediction.
        nsd_tolerance: NSD tolerance in mm.
        workers: worker processes across cases (None = all cores; 1 = in this process).
        overlays_dir: write ``<case>.png`` here (see :func:`overlay_slices`).
        images_dir: images drawn under the overlays, paired by case name (``_0000`` channel).
        spec_name: the experiment's name, recorded in ``<stem>_meta.json`` beside the CSV
            (with the folders, so ``segcli report`` finds the label maps).

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        SpecError: unknown metric, bad label, tolerance or worker count.
        DataError: missing folder or partner, unreadable file, non-integer or negative labels.
        GeometryError: a pair differs in size, spacing, origin or direction.

    Under torchrun every rank scores its share of the cases (``cases[rank::world]``, with
    ``workers`` defaulting to the node's cores divided by its processes), the results are
    gathered, rank 0 writes the files (overlays are staged in a folder beside
    ``overlays_dir``, which must be on a file system all ranks share) and every rank returns
    the whole result.
    """
    with distributed.session("cpu"):
        result = _evaluate_folders(
            pred_dir,
            ref_dir,
            output_csv,
            metrics,
            labels,
            nsd_tolerance,
            workers,
            overlays_dir,
            images_dir,
        )
        if distributed.is_main():  # the CSV's sidecar: where its label maps are (segcli report)
            _write_meta(result, pred_dir, ref_dir, images_dir, nsd_tolerance, spec_name)
        return result


def _write_meta(
    result: EvaluationResult,
    pred_dir: str | Path,
    ref_dir: str | Path,
    images_dir: str | Path | None,
    nsd_tolerance: float,
    spec_name: str | None,
) -> None:
    from segcli.report.data import write_meta

    first_ref = next(iter(pair_cases(pred_dir, ref_dir).values()))[1]
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


def _evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    output_csv: str | Path,
    metrics: Sequence[str] | None,
    labels: Sequence[int] | None,
    nsd_tolerance: float,
    workers: int | None,
    overlays_dir: str | Path | None,
    images_dir: str | Path | None,
) -> EvaluationResult:
    pred_dir, ref_dir, output_csv = Path(pred_dir), Path(ref_dir), Path(output_csv)
    metric_names = tuple(r.name for r in resolve_metrics(metrics or EvaluationSpec().metrics))
    if not (math.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
        raise SpecError(f"nsd tolerance must be a number >= 0 mm, got {nsd_tolerance}")
    cores = max(1, (os.cpu_count() or 1) // distributed.local_world_size())
    num_workers = cores if workers is None else int(workers)
    if num_workers < 1:
        raise SpecError(f"workers must be at least 1, got {workers}")
    if images_dir is not None and overlays_dir is None:
        raise SpecError("--images only sets what the overlays are drawn on; add --overlays DIR")
    label_names = _label_names(ref_dir)
    if labels is not None:
        wanted: tuple[int, ...] | None = _check_label_values(labels)
    else:
        wanted = tuple(k for k in sorted(label_names) if k > 0) or None

    pairs = pair_cases(pred_dir, ref_dir)
    # fail before computing anything when the results could not be written
    check_writable_folder(output_csv.parent, "--output")
    if output_csv.is_dir():
        raise DataError(
            f"{output_csv}: is a folder; give --output a CSV file name, e.g. metrics.csv"
        )
    if overlays_dir is not None:
        check_writable_folder(overlays_dir, "--overlays")
    images = _pair_images(Path(images_dir), list(pairs)) if images_dir is not None else None
    _check_headers(pairs, images)

    staging = None
    if overlays_dir is not None:
        overlays_dir = Path(overlays_dir)
        parent = overlays_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            staging = Path(tempfile.mkdtemp(prefix=f".{overlays_dir.name}.", dir=parent))
        staging = distributed.all_gather_object(staging)[0]  # torchrun: rank 0's folder
    tasks = [
        _Task(
            case,
            pred,
            ref,
            images[case] if images else None,
            wanted,
            metric_names,
            float(nsd_tolerance),
            staging / f"{case}.png" if staging else None,
        )
        for case, (pred, ref) in pairs.items()
    ]
    try:
        results = _run_shared(tasks, num_workers)
        ndim = len(read_geometry(next(iter(pairs.values()))[1]).size)
        all_labels = (
            wanted
            if wanted is not None
            else tuple(sorted({r.label for case in results for r in case.labels}))
        )
        cases: dict[str, dict[int, LabelResult]] = {}
        for case in sorted(results, key=lambda c: c.case):
            found = {r.label: r for r in case.labels}
            cases[case.case] = {
                label: found.get(label) or _absent(label, metric_names, ndim)
                for label in all_labels
            }
        values = {case: {k: r.values for k, r in per.items()} for case, per in cases.items()}
        summary = summarize(values, metric_names)
        summary_csv = output_csv.with_name(
            f"{output_csv.stem}_summary{output_csv.suffix or '.csv'}"
        )
        main = distributed.is_main()  # torchrun: rank 0 alone writes
        if main:
            _write_csvs(output_csv, summary_csv, cases, metric_names, summary)
        overlays: tuple[Path, ...] = ()
        if staging is not None and overlays_dir is not None:
            overlays = tuple(overlays_dir / f"{case}.png" for case in cases)
            if main:
                overlays_dir.mkdir(parents=True, exist_ok=True)
                for path in overlays:
                    publish(staging / path.name, path)
    finally:
        if staging is not None and distributed.is_main():
            shutil.rmtree(staging, ignore_errors=True)
    distributed.barrier()  # no rank returns before rank 0 has written the files
    return EvaluationResult(
        output_csv, summary_csv, metric_names, all_labels, label_names, cases, summary, overlays
    )


def _label_names(ref_dir: Path) -> dict[int, str]:
    for folder in (ref_dir, ref_dir.parent):
        names = dataset_labels(folder)
        if names:
            return names
    return {}


def _check_label_values(labels: Sequence[int]) -> tuple[int, ...]:
    out = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or label < 1:
            raise SpecError(f"labels must be integers >= 1 (0 is background), got {label!r}")
        out.append(int(label))
    if not out:
        raise SpecError("labels: give at least one label, e.g. --labels 1")
    return tuple(sorted(set(out)))


def _run_shared(tasks: list[_Task], workers: int) -> list[CaseResult]:
    """:func:`_run` on this rank's share of ``tasks``; every rank gets all results.

    A user error on any rank is raised on every rank (after the gather), so no rank waits
    for the others forever.  One process: just :func:`_run`.
    """
    mine: list[CaseResult] = []
    error: SegcliError | None = None
    try:
        mine = _run(distributed.shard(tasks), workers)
    except SegcliError as exc:
        error = exc
    parts = distributed.all_gather_object((mine, error))
    distributed.raise_first([part[1] for part in parts])
    return [result for part in parts for result in part[0]]


def _run(tasks: list[_Task], workers: int) -> list[CaseResult]:
    results: list[CaseResult] = []
    with progress_bar() as bar:
        job = bar.add_task("evaluating", total=len(tasks), status="")
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(_evaluate_one(task))
                bar.update(job, advance=1, status=task.case)
            return results
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context)
        try:
            futures = {pool.submit(_evaluate_one, task): task for task in tasks}
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(job, advance=1, status=futures[future].case)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return results


def _cell(value: float) -> str:
    if math.isnan(value):
        return ""
    return (
        str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))
    )


def _write_csvs(
    output_csv: Path,
    summary_csv: Path,
    cases: dict[str, dict[int, LabelResult]],
    metrics: tuple[str, ...],
    summary: list[SummaryRow],
) -> None:
    """Write both CSVs to temp files first, then rename both into place."""
    try:
        output_csv.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{output_csv.parent}: cannot create the output folder ({exc.strerror})"
        ) from None
    temps: list[Path] = []
    try:
        for target, header, rows in (
            (
                output_csv,
                ("case", "label", *metrics),
                (
                    [case, label, *(_cell(result.values[m]) for m in metrics)]
                    for case, per_label in cases.items()
                    for label, result in per_label.items()
                ),
            ),
            (
                summary_csv,
                SUMMARY_COLUMNS,
                (
                    [
                        row.label,
                        row.metric,
                        *(_cell(v) for v in row.as_tuple()[2:7]),
                        row.n,
                        row.n_nan,
                    ]
                    for row in summary
                ),
            ),
        ):
            tmp = _temp_path(target)
            temps.append(tmp)
            with tmp.open("x", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
        publish(temps[0], output_csv)
        publish(temps[1], summary_csv)
    except OSError as exc:
        raise DataError(
            f"{output_csv}: cannot write the metric CSVs ({exc.strerror or exc})"
        ) from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- command


def _parse_metrics(text: str) -> list[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise SpecError(f"--metrics: no metric names in {text!r}; e.g. --metrics dice,hd95,nsd")
    for name in names:
        try:
            METRICS.get(name)
        except SpecError as exc:
            raise SpecError(f"--metrics: {exc}") from None
    return names


def _parse_labels(text: str) -> list[int]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise SpecError(
                f"--labels: {part!r} is not a foreground label; give integers >= 1, e.g. --labels 1,2"
            )
        out.append(int(part))
    if not out:
        raise SpecError(f"--labels: no labels in {text!r}; e.g. --labels 1,2")
    return out


def evaluate_command(
    exp: Experiment | None,
    pred: Path,
    ref: Path,
    output: Path,
    metrics: str | None = None,
    labels: str | None = None,
    nsd_tolerance: float | None = None,
    workers: int | None = None,
    overlays: Path | None = None,
    images: Path | None = None,
    compare_postprocessing: bool = False,
    report: Path | None = None,
) -> EvaluationResult:
    """The ``segcli evaluate`` command: options override the spec's ``evaluation`` section.

    Args:
        exp: the experiment (its ``evaluation`` section supplies defaults), or None.
        pred, ref, output, overlays, images: as in :func:`evaluate_folders`.
        metrics: comma-separated metric names, or None for the spec's list.
        labels: comma-separated labels, or None for the spec's / dataset.json's / all found.
        nsd_tolerance: mm, or None for the spec's value (default 1.0).
        workers: worker processes, or None for all cores.
        compare_postprocessing: also compare each postprocessing step's mean Dice per label
            (:mod:`segcli.engine.postprocessing`; ``min_size`` from the spec's
            ``inference.postprocess``) and write ``<stem>_postprocessing.csv``.
        report: also write the HTML report of the run here (:mod:`segcli.report`).
    """
    evaluation = exp.evaluation if exp is not None else EvaluationSpec()
    if images is not None and overlays is None and report is None:
        raise SpecError(
            "--images only sets what the overlays and the report draw on; "
            "add --overlays DIR or --report FILE.html"
        )
    report_images, images = images, (images if overlays is not None else None)
    with distributed.session("cpu") as ctx:  # torchrun: the cases split across the ranks
        result = evaluate_folders(
            pred,
            ref,
            output,
            metrics=_parse_metrics(metrics) if metrics is not None else list(evaluation.metrics),
            labels=_parse_labels(labels) if labels is not None else evaluation.labels,
            nsd_tolerance=evaluation.nsd_tolerance if nsd_tolerance is None else nsd_tolerance,
            workers=workers,
            overlays_dir=overlays,
            images_dir=images,
            spec_name=exp.name if exp is not None else None,
        )
    if not is_quiet():
        print_summary(result)
    if report is not None and ctx.is_main:
        from segcli.engine.report import report_command

        if report_images is not None and images is None:  # record them for `segcli report`
            _write_meta(
                result,
                pred,
                ref,
                report_images,
                evaluation.nsd_tolerance if nsd_tolerance is None else nsd_tolerance,
                exp.name if exp is not None else None,
            )
        report_command([result.output_csv], report, images=report_images)
    if compare_postprocessing and ctx.is_main:  # rank 0 alone, on all cases
        from segcli.engine import postprocessing as post

        min_size = exp.inference.postprocess.min_size if exp is not None else 0
        rows = post.compare_postprocessing(
            pair_cases(pred, ref), result.labels, post.postprocessing_steps(min_size)
        )
        csv_path = post.write_comparison_csv(post.postprocessing_csv_path(output), rows)
        if not is_quiet():
            from rich.markup import escape

            post.print_comparison(rows, result.label_names)
            info(escape(f"wrote {csv_path}"))
    return result


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
        table.add_column(escape(f"label {label}" + (f" ({name})" if name else "")), justify="right")
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
                    f"label {label}: {why} in {len(result.cases)} cases; their NaN values are "
                    f"left out of the means of {', '.join(left_out)}"
                )
            )
        if statuses["absent"]:
            console.print(
                f"label {label}: {statuses['absent']} case(s) have it in neither mask "
                "(scored as a perfect match: dice 1, distances 0)"
            )
    info(escape(f"wrote {result.output_csv} and {result.summary_csv}"))
    if result.overlays:
        info(escape(f"wrote {len(result.overlays)} overlay(s) to {result.overlays[0].parent}"))
