"""``segcli evaluate``'s per-case work: one task per case, run in worker processes and ranks.

    >>> from segcli.engine.evaluate_cases import CaseTask, run_shared
    >>> results = run_shared([CaseTask("a", pred, ref, None, None, ("dice",), 1.0)], workers=2)

A task reads its pair once and computes everything asked of it: the metrics, the overlay PNG and
the postprocessing comparison (:func:`segcli.metrics.postprocessing_gain.case_step_dice`).
Worker processes are spawned (never forked from a threaded parent); under torchrun each rank
runs its share of the tasks and every rank gets all results.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcli.atomic import publish
from segcli.engine import distributed
from segcli.engine.overlays import render_overlay
from segcli.engine.runtime import progress_bar
from segcli.errors import DataError, SegcliError
from segcli.io.images import check_same_grid, read_image, read_label
from segcli.metrics import LabelResult, evaluate_labels
from segcli.metrics.postprocessing_gain import CaseStepDice, case_step_dice
from segcli.metrics.stray import StrayLabel, stray_labels

__all__ = [
    "CaseResult",
    "CaseTask",
    "absent_result",
    "collect_cases",
    "discard_staging",
    "evaluate_one",
    "publish_overlays",
    "run_shared",
    "stage_overlays",
    "stray_rows",
]

#: Metrics computed for every case when overlays are drawn (their titles show them).
_OVERLAY_METRICS = ("dice", "hd95")


@dataclass(frozen=True)
class CaseResult:
    """The per-label results of one case (labels ascending).

    Attributes:
        postprocessing: Dice before / after each postprocessing step, when asked for.
        stray: values of this case outside the labels scored (only when labels were given);
            ``stray_results`` scores those only predicted here (for the CSV rows).
    """

    case: str
    labels: tuple[LabelResult, ...]
    postprocessing: CaseStepDice | None = None
    stray: tuple[StrayLabel, ...] = ()  # values outside the labels scored
    stray_results: tuple[LabelResult, ...] = ()  # their metrics (CSV rows, not the summary)


@dataclass(frozen=True)
class CaseTask:
    """What to compute for one case (picklable: it crosses into a worker process)."""

    case: str
    pred: Path
    ref: Path
    image: Path | None
    labels: tuple[int, ...] | None
    metrics: tuple[str, ...]
    nsd_tolerance: float
    overlay: Path | None = None
    #: postprocessing steps to compare (name → postprocess_labels keywords), or None
    steps: dict[str, dict[str, Any]] | None = None
    #: score these regions (label-value sets, :mod:`segcli.labels`) as labels 1..K instead
    regions: tuple[tuple[int, ...], ...] | None = None


def evaluate_one(task: CaseTask) -> CaseResult:
    """Read one pair, score it, draw its overlay, compare postprocessing (in a worker)."""
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
    if task.regions is not None:
        from segcli.metrics.regions import region_label_results

        results = region_label_results(
            pred, ref, ref_geometry.spacing, task.regions, names, task.nsd_tolerance
        )
    else:
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
    post = None
    if task.steps is not None:
        post = case_step_dice(pred, ref, ref_geometry.spacing, task.labels, task.steps)
    # values outside the labels asked for; those only predicted here (a stray 7) get scored
    # too, for the CSV rows (stray_rows drops values some reference contains)
    # (with regions, the label values the regions cover are the ones scored)
    scored = task.labels
    if task.regions is not None:
        scored = tuple(sorted({value for region in task.regions for value in region}))
    stray = stray_labels(pred, ref, scored, ref_geometry.spacing) if scored else []
    alarms = [s.label for s in stray if s.pred_voxels and not s.ref_voxels]
    extra = evaluate_labels(
        pred, ref, ref_geometry.spacing, alarms, task.metrics, task.nsd_tolerance
    )
    return CaseResult(task.case, trimmed, post, tuple(stray), tuple(extra) if alarms else ())


def absent_result(label: int, metrics: tuple[str, ...], ndim: int) -> LabelResult:
    """The result of a label present in neither mask (scored by the same code path)."""
    empty = np.zeros((1,) * ndim, dtype=np.uint8)
    return evaluate_labels(empty, empty, (1.0,) * ndim, [label], metrics)[0]


def collect_cases(
    results: list[CaseResult],
    labels: tuple[int, ...] | None,
    metrics: tuple[str, ...],
    ndim: int,
) -> tuple[tuple[int, ...], dict[str, dict[int, LabelResult]]]:
    """The labels scored and ``{case: {label: result}}``, cases sorted by name.

    ``labels`` None: every label some case holds.  A label absent from a case (neither mask
    holds it) gets :func:`absent_result`, so every case has a row per label.
    """
    all_labels = (
        labels
        if labels is not None
        else tuple(sorted({r.label for case in results for r in case.labels}))
    )
    cases: dict[str, dict[int, LabelResult]] = {}
    for case in sorted(results, key=lambda c: c.case):
        found = {r.label: r for r in case.labels}
        cases[case.case] = {
            label: found.get(label) or absent_result(label, metrics, ndim) for label in all_labels
        }
    return all_labels, cases


def stray_rows(
    results: list[CaseResult], label_names: dict[int, str]
) -> tuple[dict[str, tuple[StrayLabel, ...]], dict[str, tuple[LabelResult, ...]]]:
    """Stray labels per case and their CSV rows: values outside the labels scored that a
    prediction holds, that no reference contains and that dataset.json does not name (a value
    the user left out of ``--labels`` on purpose is in the references: not stray)."""
    known = set(label_names) | {s.label for c in results for s in c.stray if s.ref_voxels}
    stray, extra = {}, {}
    for case in sorted(results, key=lambda c: c.case):
        found = tuple(s for s in case.stray if s.pred_voxels and s.label not in known)
        if found:
            stray[case.case] = found
            labels = {s.label for s in found}
            extra[case.case] = tuple(r for r in case.stray_results if r.label in labels)
    return stray, extra


# --------------------------------------------------------------------------- overlay staging
#
# Overlay PNGs are drawn into a hidden folder beside ``--overlays`` and moved into it only when
# every case has succeeded: a failed run leaves no half set of pictures.


def stage_overlays(overlays_dir: Path | None) -> Path | None:
    """The hidden staging folder beside ``overlays_dir`` (None without overlays).

    Under torchrun rank 0 creates it and every rank gets its path.
    """
    if overlays_dir is None:
        return None
    parent = overlays_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = None
    if distributed.is_main():
        staging = Path(tempfile.mkdtemp(prefix=f".{overlays_dir.name}.", dir=parent))
    return distributed.all_gather_object(staging)[0]  # torchrun: rank 0's folder


def publish_overlays(
    staging: Path | None, overlays_dir: Path | None, cases: list[str]
) -> tuple[Path, ...]:
    """Move each case's staged ``<case>.png`` into ``overlays_dir`` (rank 0 alone moves).

    Returns:
        The published paths, one per case in ``cases`` order (empty without overlays).
    """
    if staging is None or overlays_dir is None:
        return ()
    overlays = tuple(overlays_dir / f"{case}.png" for case in cases)
    if distributed.is_main():
        overlays_dir.mkdir(parents=True, exist_ok=True)
        for path in overlays:
            publish(staging / path.name, path)
    return overlays


def discard_staging(staging: Path | None) -> None:
    """Remove the staging folder and whatever is left in it (rank 0; None: nothing)."""
    if staging is not None and distributed.is_main():
        shutil.rmtree(staging, ignore_errors=True)


def run_shared(tasks: list[CaseTask], workers: int) -> list[CaseResult]:
    """:func:`run` on this rank's share of ``tasks``; every rank gets all results.

    A user error on any rank is raised on every rank (after the gather), so no rank waits
    for the others forever.  One process: just :func:`run`.
    """
    mine: list[CaseResult] = []
    error: SegcliError | None = None
    try:
        mine = run(distributed.shard(tasks), workers)
    except SegcliError as exc:
        error = exc
    parts = distributed.all_gather_object((mine, error))
    distributed.raise_first([part[1] for part in parts])
    return [result for part in parts for result in part[0]]


def run(tasks: list[CaseTask], workers: int) -> list[CaseResult]:
    """Every task, in ``workers`` spawned processes (1: in this one), with a progress bar."""
    results: list[CaseResult] = []
    with progress_bar() as bar:
        job = bar.add_task("evaluating", total=len(tasks), status="")
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(evaluate_one(task))
                bar.update(job, advance=1, status=task.case)
            return results
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context)
        try:
            futures = {pool.submit(evaluate_one, task): task for task in tasks}
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(job, advance=1, status=futures[future].case)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return results
