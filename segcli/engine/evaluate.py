"""``segcli evaluate``: score folders of predicted label maps against references.

    >>> from segcli.engine.evaluate import evaluate_folders
    >>> result = evaluate_folders("pred/", "data/labelsTs/", "metrics.csv", ["dice", "hd95"])
    >>> result.summary_csv                      # metrics_summary.csv, next to metrics.csv
    >>> result.values["case_001"][1]["dice"]    # {case: {label: {metric: value}}}

Steps: pair files by case name (:func:`segcli.io.dataset.pair_cases`); read every pair's
header and stop on the first geometry mismatch before computing anything; evaluate cases in
worker processes (:mod:`segcli.engine.evaluate_cases`: metrics, overlay and the optional
postprocessing comparison from one read of each pair); then write ``FILE.csv`` (one row per case
and label: ``case,label,<metrics>``), its ``FILE_summary.csv`` (one row per label and metric:
``mean,std,median,min,max,n,n_nan``) and the optional overlay PNGs
(:mod:`segcli.engine.metrics_output`).  Nothing is written unless every case was evaluated; each
file appears whole.  NaN values are written as empty cells.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segcli.config.schema import EvaluationSpec
from segcli.engine import distributed
from segcli.engine.evaluate_cases import (
    CaseResult,
    CaseTask,
    collect_cases,
    discard_staging,
    publish_overlays,
    run_shared,
    stage_overlays,
    stray_rows,
)
from segcli.engine.evaluate_labels import scored_labels
from segcli.engine.metrics_output import (
    EvaluationResult,
    postprocessing_csv_path,
    print_comparison,
    print_summary,
    write_comparison_csv,
    write_evaluation_meta,
    write_metric_csvs,
)
from segcli.engine.overlays import overlay_slices
from segcli.engine.runtime import check_writable_folder, info, is_quiet
from segcli.errors import DataError, SpecError
from segcli.io.dataset import check_pair_grids, labels_near, pair_cases, pair_images
from segcli.io.images import read_geometry
from segcli.metrics import resolve_metrics
from segcli.metrics.postprocessing_gain import (
    StepComparison,
    postprocessing_steps,
    summarize_steps,
)
from segcli.metrics.summary import summarize

__all__ = [
    "CaseResult",
    "EvaluationResult",
    "evaluate_command",
    "evaluate_folders",
    "overlay_slices",
]


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
    postprocessing: dict[str, dict[str, Any]] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    spec_name: str | None = None,
    cases: Sequence[str] | None = None,
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
        regions: score these regions instead of labels (the spec's ``regions``, name → label
            values, see :mod:`segcli.labels`): region ``k`` is the voxels whose label lies in
            its set, in prediction and reference alike.  Rows are numbered 1..K in the
            results and carry the region's name in the CSVs' ``label`` column.
        postprocessing: also compare these postprocessing steps (name → keywords of
            :func:`segcli.postprocess.postprocess_labels`, e.g.
            :func:`segcli.metrics.postprocessing_gain.postprocessing_steps`), on the label maps
            read for the metrics.
        spec_name: the experiment's name, recorded in ``<stem>_meta.json`` beside the CSV
            (with the folders, so ``segcli report`` finds the label maps).
        cases: score only these cases (the folders may hold others); each needs both files.

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
            postprocessing,
            regions,
            cases,
        )
        if distributed.is_main():  # the CSV's sidecar: where its label maps are (segcli report)
            write_evaluation_meta(result, pred_dir, ref_dir, images_dir, nsd_tolerance, spec_name)
        return result


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
    postprocessing: dict[str, dict[str, Any]] | None,
    regions: Mapping[str, Sequence[int]] | None = None,
    cases: Sequence[str] | None = None,
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
    wanted, label_names, region_values = scored_labels(
        labels, regions, postprocessing, labels_near(ref_dir)
    )

    pairs = pair_cases(pred_dir, ref_dir, cases)
    # fail before computing anything when the results could not be written
    check_writable_folder(output_csv.parent, "--output")
    if output_csv.is_dir():
        raise DataError(
            f"{output_csv}: is a folder; give --output a CSV file name, e.g. metrics.csv"
        )
    if overlays_dir is not None:
        check_writable_folder(overlays_dir, "--overlays")
    images = pair_images(Path(images_dir), list(pairs)) if images_dir is not None else None
    check_pair_grids(pairs, images)

    overlays_dir = Path(overlays_dir) if overlays_dir is not None else None
    staging = stage_overlays(overlays_dir)
    tasks = [
        CaseTask(
            case,
            pred,
            ref,
            images[case] if images else None,
            wanted,
            metric_names,
            float(nsd_tolerance),
            staging / f"{case}.png" if staging else None,
            postprocessing,
            region_values,
        )
        for case, (pred, ref) in pairs.items()
    ]
    try:
        results = run_shared(tasks, num_workers)
        ndim = len(read_geometry(next(iter(pairs.values()))[1]).size)
        all_labels, cases = collect_cases(results, wanted, metric_names, ndim)
        values = {case: {k: r.values for k, r in per.items()} for case, per in cases.items()}
        summary = summarize(values, metric_names)
        comparison: tuple[StepComparison, ...] = ()
        if postprocessing is not None:
            per_case = [r.postprocessing for r in sorted(results, key=lambda c: c.case)]
            steps = [case for case in per_case if case is not None]
            comparison = tuple(summarize_steps(steps, all_labels, list(postprocessing)))
        summary_csv = output_csv.with_name(
            f"{output_csv.stem}_summary{output_csv.suffix or '.csv'}"
        )
        stray, extra = stray_rows(results, label_names)
        main = distributed.is_main()  # torchrun: rank 0 alone writes
        if main:
            text = label_names if regions is not None else None
            write_metric_csvs(output_csv, summary_csv, cases, metric_names, summary, extra, text)
        overlays = publish_overlays(staging, overlays_dir, list(cases))
    finally:
        discard_staging(staging)
    distributed.barrier()  # no rank returns before rank 0 has written the files
    return EvaluationResult(
        output_csv,
        summary_csv,
        metric_names,
        all_labels,
        label_names,
        cases,
        summary,
        overlays,
        comparison,
        stray,
        tuple(regions or ()),
    )


# --------------------------------------------------------------------------- command


def evaluate_command(
    pred: Path,
    ref: Path,
    output: Path,
    evaluation: EvaluationSpec | None = None,
    workers: int | None = None,
    overlays: Path | None = None,
    images: Path | None = None,
    compare_postprocessing: bool = False,
    postprocess_min_size: int = 0,
    regions: Mapping[str, Sequence[int]] | None = None,
    report: Path | None = None,
    spec_name: str | None = None,
) -> EvaluationResult:
    """The ``segcli evaluate`` command: evaluate, print the tables, write the comparison.

    Args:
        pred, ref, output, workers, overlays, images: as in :func:`evaluate_folders`.
        evaluation: metrics, labels and NSD tolerance (the spec's ``evaluation`` section with
            the command line's flags applied, see ``segcli.cli``); None = the defaults.
        compare_postprocessing: also compare each postprocessing step's mean Dice per label
            (:mod:`segcli.metrics.postprocessing_gain`) and write ``<stem>_postprocessing.csv``.
        postprocess_min_size: the ``min_size`` step compared (the spec's
            ``inference.postprocess.min_size``; 0: not compared).
        regions: the spec's ``regions``: score them instead of labels (:func:`evaluate_folders`).
        report: also write the HTML report of the run here (:mod:`segcli.report`); ``images``
            are then drawn under its overlays even without ``overlays``.
        spec_name: the experiment's name, recorded beside the CSV for the report.
    """
    evaluation = evaluation if evaluation is not None else EvaluationSpec()
    if images is not None and overlays is None and report is None:
        raise SpecError(
            "--images only sets what the overlays and the report draw on; "
            "add --overlays DIR or --report FILE.html"
        )
    report_images, images = images, (images if overlays is not None else None)
    steps = postprocessing_steps(postprocess_min_size) if compare_postprocessing else None
    with distributed.session("cpu") as ctx:  # torchrun: the cases split across the ranks
        result = evaluate_folders(
            pred,
            ref,
            output,
            metrics=list(evaluation.metrics),
            labels=evaluation.labels,
            nsd_tolerance=evaluation.nsd_tolerance,
            workers=workers,
            overlays_dir=overlays,
            images_dir=images,
            postprocessing=steps,
            regions=regions,
            spec_name=spec_name,
        )
    if not is_quiet():
        print_summary(result)
    if report is not None and ctx.is_main:
        from segcli.engine.report import report_command

        if report_images is not None and images is None:  # record them for `segcli report`
            write_evaluation_meta(
                result, pred, ref, report_images, evaluation.nsd_tolerance, spec_name
            )
        report_command([result.output_csv], report, images=report_images)
    if compare_postprocessing and ctx.is_main:  # rank 0 alone writes
        csv_path = write_comparison_csv(postprocessing_csv_path(output), result.postprocessing)
        if not is_quiet():
            from rich.markup import escape

            print_comparison(result.postprocessing, result.label_names)
            info(escape(f"wrote {csv_path}"))
    return result
