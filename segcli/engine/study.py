"""``segcli study``: every variant on the same folds, scored out of fold, ranked and compared.

    >>> from segcli.engine.study import run_study
    >>> result = run_study("loss-study.yaml", "studies/loss", overrides=["train.epochs=5"])
    >>> result.ranking[0].variant, result.best

Into ``DIR``: ``runs/<variant>/fold_<k>/`` (ordinary cross-validated runs, see
:mod:`segcli.engine.crossval`), ``study.csv`` (``variant,fold,case,label,<metrics>``),
``ranking.csv``, ``study.html`` (:mod:`segcli.study.page`), ``ensemble_oof.csv`` (the top two
variants' models averaged, every case scored by the fold that held it out) and ``best.yaml``:
the winning variant's spec — or, when the top two together score higher out of fold (nnU-Net's
``find_best_configuration``), the winner's spec with the runner-up in ``ensemble:`` — which
``segcli predict best.yaml`` runs as the ensemble of its folds.
Interrupted, it resumes: folds already trained are kept (see ``train --fold all``).

With ``budget_minutes`` the study's wall clock is split evenly between its variant × fold runs;
each variant's schedule (epochs, iterations, validation cadence) is sized to its share from
its own measured step time, with the plan's rules (:mod:`segcli.plan.budget`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from segcli.atomic import atomic_open
from segcli.engine.runtime import check_writable_folder, console, info, is_quiet
from segcli.errors import SegcliError, SpecError
from segcli.study.compare import Pair, RankRow, compare_pairs, rank
from segcli.study.design import Study, Variant, load_study, with_output

__all__ = ["StudyResult", "run_study"]


@dataclass
class StudyResult:
    folder: Path
    ranking: list[RankRow]
    pairs: list[Pair]
    best: Path
    files: dict[str, Path] = field(default_factory=dict)
    #: the top two variants' models averaged, ranked out of fold (None: fewer than two variants)
    ensemble: RankRow | None = None
    #: best.yaml is that ensemble (it scored higher than the winner alone)
    ensemble_chosen: bool = False


def run_study(
    study_path: str | Path,
    out_dir: str | Path,
    overrides: Iterable[str] = (),
    budget_minutes: float | None = None,
    device: str = "auto",
) -> StudyResult:
    """Train, score, rank and compare every variant of the study at ``study_path``.

    Raises:
        SpecError: a bad study file, variants that differ in dataset or labels, a bad budget.
        SegcliError: everything training, predict and evaluate raise.
    """
    from segcli.engine.crossval import train_folds

    out = Path(out_dir)
    check_writable_folder(out, "-o")
    study = with_output(load_study(study_path, overrides), out / "runs")
    for v in study.variants:
        if v.exp.data.root is None:
            raise SpecError(
                f"variant '{v.name}': a study scores each fold's cases from files; set data.root "
                "(for the toy data: segcli synth DIR, then --set data.root=DIR)"
            )
    out.mkdir(parents=True, exist_ok=True)
    if budget_minutes is not None:
        study = _fit_budget(study, budget_minutes, device, out)
    for i, v in enumerate(study.variants, start=1):
        info(f"variant {i}/{len(study.variants)}: {v.name} ({v.exp.cv_folder})")
        train_folds(v.exp, "all", device=device)
    scores, folds_of, metrics = _read_scores(study)
    ranking = rank(scores, study.metric, folds_of)
    order = [r.variant for r in ranking]
    pairs = compare_pairs(scores, study.metric, order)
    result = StudyResult(out, ranking, pairs, out / "best.yaml")
    result.files["study.csv"] = _write_study_csv(out / "study.csv", scores, folds_of, metrics)
    result.files["ranking.csv"] = _write_ranking(out / "ranking.csv", ranking, study.metric)
    pair = _top_two(study, ranking, folds_of)
    ensemble: RankRow | None = None
    if pair is not None:
        ensemble = _score_ensemble(pair, folds_of[pair[0].name], study.metric, device, out)
        result.files["ensemble_oof.csv"] = out / ENSEMBLE_CSV
    from segcli.study.page import study_page

    html = study_page(
        f"segcli study: {Path(study_path).name}",
        study.metric,
        study.folds,
        ranking,
        pairs,
        scores,
        [f"{len(study.variants)} variants × {study.folds} folds, out of fold; files in {out}"]
        + ([] if ensemble is None else [_ensemble_note(pair, ensemble, ranking[0], study.metric)]),
    )
    with atomic_open(out / "study.html", "w", what="the study page") as handle:
        handle.write(html)
    result.files["study.html"] = out / "study.html"
    winner = next(v for v in study.variants if v.name == ranking[0].variant)
    chosen = pair if ensemble is not None and _beats(ensemble, ranking[0], study.metric) else None
    _write_best(result.best, winner, ranking[0], study.metric, chosen, ensemble)
    result.ensemble, result.ensemble_chosen = ensemble, chosen is not None
    _print(ranking, pairs, study.metric)
    if ensemble is not None and pair is not None:
        info(_ensemble_note(pair, ensemble, ranking[0], study.metric))
    return result


# --------------------------------------------------------------------------- top-two ensemble

#: the top two variants' fold ensembles, scored out of fold (evaluate's columns)
ENSEMBLE_CSV = "ensemble_oof.csv"
#: their label maps, every case from the fold that held it out
ENSEMBLE_DIR = "ensemble_oof"


def _top_two(
    study: Study, ranking: list[RankRow], folds_of: dict[str, dict[str, int]]
) -> tuple[Variant, Variant] | None:
    """The two best variants when they can be ensembled out of fold (same folds), else None."""
    if len(ranking) < 2 or any(math.isnan(r.mean) for r in ranking[:2]):
        return None
    first, second = (next(v for v in study.variants if v.name == r.variant) for r in ranking[:2])
    if folds_of.get(first.name) != folds_of.get(second.name):
        info(f"{first.name} and {second.name} were not scored on the same folds: no ensemble")
        return None
    return first, second


def _score_ensemble(
    pair: tuple[Variant, Variant], fold_of: dict[str, int], metric: str, device: str, out: Path
) -> RankRow:
    """Predict every case with the mean of both variants' models of the fold that held it out
    (as :func:`segcli.engine.predict.predict_case`, each model with its own preprocessing),
    score the label maps as cross-validation scores its folds, and rank them like a variant.
    Cases already predicted are kept (a rerun resumes)."""
    from segcli.engine.crossval import score_cases
    from segcli.engine.predict import predict_case
    from segcli.engine.runtime import resolve_device
    from segcli.inference.ensemble import load_models
    from segcli.io.checkpoint import run_checkpoint
    from segcli.io.dataset import find_cases

    first, second = pair
    exp = first.exp
    assert exp.data.root is not None
    pred_dir = out / ENSEMBLE_DIR
    pred_dir.mkdir(parents=True, exist_ok=True)
    todo = sorted(c for c in fold_of if not (pred_dir / f"{c}.nii.gz").is_file())
    if todo:
        device = resolve_device(device)
        files = {c.name: c.images for c in find_cases(exp.data.root, "Tr", check_geometry=False)}
        info(f"out-of-fold ensemble of {first.name} and {second.name}: {len(todo)} cases")
        for k in sorted({fold_of[c] for c in todo}):
            fix = "train the study's folds first"
            models = load_models(exp, [run_checkpoint(exp.cv_folder / f"fold_{k}", fix)[0]],
                                 device)  # fmt: skip
            other = run_checkpoint(second.exp.cv_folder / f"fold_{k}", fix)[0]
            models += load_models(second.exp, [other], device, member=True)
            for case in (c for c in todo if fold_of[c] == k):
                predict_case(exp, models, files[case], pred_dir / f"{case}.nii.gz", None, device)
    path = score_cases(exp, pred_dir, out / ENSEMBLE_CSV, sorted(fold_of))
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        per_case.setdefault(row["case"], {})[row["label"]] = _values(row, [metric])
    name = f"{first.name}+{second.name}"
    (row,) = rank({name: per_case}, metric, {name: fold_of})
    return row


def _beats(ensemble: RankRow, winner: RankRow, metric: str) -> bool:
    from segcli.report.stats import direction

    if math.isnan(ensemble.mean):
        return False
    if direction(metric) == "lower":
        return ensemble.mean < winner.mean
    return ensemble.mean > winner.mean


def _ensemble_note(
    pair: tuple[Variant, Variant] | None, ensemble: RankRow, winner: RankRow, metric: str
) -> str:
    assert pair is not None
    verdict = (
        "higher: best.yaml is the ensemble of the two"
        if _beats(ensemble, winner, metric)
        else "not better: best.yaml is the winner alone"
    )
    return (
        f"ensemble of the top two ({pair[0].name} + {pair[1].name}), out of fold: mean {metric} "
        f"{ensemble.mean:.4f} against {winner.mean:.4f} for {winner.variant} alone — {verdict} "
        f"(nnU-Net's find_best_configuration rule; {ENSEMBLE_CSV})"
    )


# --------------------------------------------------------------------------- budget


def _fit_budget(study: Study, minutes: float, device: str, out: Path) -> Study:
    """Size every variant's schedule to an even share of ``minutes`` (measured step times)."""
    from segcli.config import from_dict
    from segcli.engine.plan import _startup_seconds, measure_spec
    from segcli.engine.runtime import resolve_device
    from segcli.plan.budget import MIN_ITERATIONS, size_schedule
    from segcli.plan.fingerprint import (
        extract_fingerprint,
        fingerprint_is_fresh,
        load_fingerprint,
        save_fingerprint,
    )

    if not (minutes > 0 and math.isfinite(minutes)):
        raise SpecError(f"--budget-minutes {minutes:g}: must be a positive number")
    device = resolve_device(device)
    root = study.variants[0].exp.data.root
    assert root is not None
    path = out / "fingerprint.json"
    fp = load_fingerprint(path) if fingerprint_is_fresh(path, root) else None
    if fp is None:
        fp = extract_fingerprint(root)
        save_fingerprint(fp, path)
    runs = len(study.variants) * study.folds
    share = minutes * 60.0 / runs
    n = len(fp.cases)
    val_cases = max(1, round(n / study.folds))
    startup = _startup_seconds()
    sized = []
    for v in study.variants:
        m = measure_spec(v.exp.model_dump(mode="json"), fp, device, startup)
        s = size_schedule(m, share, n - val_cases, val_cases)
        if s.iterations < MIN_ITERATIONS:
            raise SpecError(
                f"--budget-minutes {minutes:g}: {runs} runs get {share / 60:.1f} min each, "
                f"{s.iterations} steps for variant '{v.name}' (under {MIN_ITERATIONS}); give "
                "more minutes or fewer folds / variants"
            )
        raw = v.exp.model_dump(mode="json")
        raw["train"].update(
            epochs=s.epochs,
            iterations_per_epoch=s.iterations_per_epoch,
            val_every=s.val_every,
            val_max_cases=s.val_max_cases,
        )
        info(
            f"budget: variant '{v.name}' gets {s.epochs} epochs × {s.iterations_per_epoch} "
            f"steps per fold ({m.step_seconds * 1000:.0f} ms a step; predicted "
            f"{s.predicted_seconds / 60:.1f} of {share / 60:.1f} min)"
        )
        sized.append(Variant(v.name, v.slug, from_dict(raw, source=f"variant {v.slug}")))
    return Study(study.path, study.folds, study.metric, sized)


# --------------------------------------------------------------------------- results


def _read_scores(study: Study) -> tuple[dict, dict, list[str]]:
    """variant → case → label → metric, variant → case → fold, and the metric columns."""
    scores: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    folds_of: dict[str, dict[str, int]] = {}
    metrics: list[str] = []
    for v in study.variants:
        path = v.exp.cv_folder / "cv_metrics.csv"
        if not path.is_file():
            raise SegcliError(f"variant '{v.name}': no out-of-fold scores ({path})")
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        columns = [c for c in rows[0] if c not in ("case", "label", "fold")] if rows else []
        if study.metric not in columns:
            raise SpecError(
                f"metric '{study.metric}' is not among variant '{v.name}''s evaluation.metrics "
                f"({', '.join(columns)}); add it to evaluation.metrics"
            )
        metrics = metrics or columns
        per_case = scores.setdefault(v.name, {})
        for row in rows:
            per_case.setdefault(row["case"], {})[row["label"]] = _values(row, columns)
            folds_of.setdefault(v.name, {})[row["case"]] = int(row["fold"])
    return scores, folds_of, metrics


def _values(row: dict[str, str], columns: list[str]) -> dict[str, float]:
    """An evaluate CSV row's ``columns`` as floats (an empty cell: NaN)."""
    return {m: float(row[m]) if row.get(m) not in (None, "") else math.nan for m in columns}


def _write_study_csv(path: Path, scores: dict, folds_of: dict, metrics: list[str]) -> Path:
    with atomic_open(path, "w", what="study.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "fold", "case", "label", *metrics])
        for variant, per_case in scores.items():
            for case, labels in sorted(per_case.items()):
                for label, values in labels.items():
                    cells = [_num(values.get(m, math.nan)) for m in metrics]
                    writer.writerow([variant, folds_of[variant][case], case, label, *cells])
    return path


def _num(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def _write_ranking(path: Path, ranking: list[RankRow], metric: str) -> Path:
    with atomic_open(path, "w", what="ranking.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "variant", f"mean_{metric}", "fold_std", "n"])
        for r in ranking:
            writer.writerow([r.rank, r.variant, _num(r.mean), _num(r.fold_std), r.n])
    return path


def _write_best(
    path: Path,
    winner: Variant,
    row: RankRow,
    metric: str,
    pair: tuple[Variant, Variant] | None = None,
    ensemble: RankRow | None = None,
) -> None:
    from segcli.config import dump

    exp = winner.exp
    header = (
        f"# best variant of the study: {winner.name} (mean out-of-fold {metric} "
        f"{row.mean:.4f}); its folds are in {winner.exp.cv_folder}\n"
    )
    if pair is not None and ensemble is not None:
        second = pair[1]
        header = (
            f"# best of the study: the ensemble of {winner.name} and {second.name} (mean "
            f"out-of-fold {metric} {ensemble.mean:.4f}; {winner.name} alone {row.mean:.4f}); "
            f"folds in {winner.exp.cv_folder} and {second.exp.cv_folder} (ensemble:)\n"
        )
        exp = exp.model_copy(update={"ensemble": [str(second.exp.cv_folder)]})
    header += "# segcli predict best.yaml -i IMAGES -o OUT averages the fold models\n"
    with atomic_open(path, "w", what="best.yaml") as handle:
        handle.write(header + dump(exp))


def _print(ranking: list[RankRow], pairs: list[Pair], metric: str) -> None:
    if is_quiet():
        return
    from rich.table import Table

    table = Table(title=f"ranking by out-of-fold {metric}")
    for column in ("rank", "variant", f"mean {metric}", "std of fold means", "n"):
        table.add_column(column)
    for r in ranking:
        table.add_row(str(r.rank), r.variant, f"{r.mean:.4f}", f"{r.fold_std:.4f}", str(r.n))
    console.print(table)
    significant = [p for p in pairs if p.better]
    for p in pairs:
        worse = p.a if p.better == p.b else p.b
        if p.better:
            info(
                f"label {p.label}: {p.better} better than {worse} ({metric} difference "
                f"{abs(p.stats.mean_diff):.4f}, Holm p {p.p_holm:.3g})"
            )
    if not significant:
        info("no difference between variants is significant after Holm's correction")
