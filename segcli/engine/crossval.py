"""K-fold cross-validation: train folds, predict each fold's validation cases, score out of fold.

    >>> from segcli.engine.crossval import train_folds
    >>> result = train_folds(load("exp.yaml"), "all", device="cpu")   # data.folds: 5
    >>> result.out_of_fold      # runs/<name>/cv_metrics.csv, one row per (case, label), a fold column

Layout of a cross-validated run (``data.folds: K``), as nnU-Net's:

    <output>/<name>/fold_<k>/          an ordinary run folder (config.yaml with data.fold: k,
                                       split.json, checkpoints, log.csv, curves.png) and
                                       validation.csv: fold k's validation cases scored
    <output>/<name>/validation/        every case's label map, predicted by the fold that held
                                       it out (the folds partition the cases)
    <output>/<name>/cv_metrics.csv     out-of-fold evaluation of every case (evaluate's columns
                                       and a last column ``fold``), with ``_summary.csv`` and
                                       ``cv_folds.csv``: each fold's mean and the spread between
                                       folds (mean, std, min, max of the fold means)

``--fold all`` trains the folds one after another and is resumable: a fold already trained is
skipped (a partly trained one resumes), a case already predicted is kept.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segcli.atomic import atomic_open
from segcli.config import Experiment
from segcli.engine.runtime import info
from segcli.errors import SpecError

__all__ = [
    "CrossValResult",
    "fold_experiment",
    "parse_folds",
    "score_cases",
    "train_folds",
    "write_out_of_fold",
]

#: the out-of-fold files in ``<output>/<name>``
OUT_OF_FOLD_CSV = "cv_metrics.csv"
FOLDS_CSV = "cv_folds.csv"
VALIDATION_DIR = "validation"


@dataclass
class CrossValResult:
    """What :func:`train_folds` did.

    Attributes:
        folds: the folds trained (or found trained) now, in order.
        runs: their run folders.
        fold_csvs: each fold's ``validation.csv``.
        out_of_fold: ``cv_metrics.csv`` once every fold has predicted its cases, else None.
    """

    folds: list[int]
    runs: list[Path] = field(default_factory=list)
    fold_csvs: list[Path] = field(default_factory=list)
    out_of_fold: Path | None = None


def fold_experiment(exp: Experiment, fold: int) -> Experiment:
    """``exp`` with ``data.fold`` set (its run folder is then ``<output>/<name>/fold_<k>``)."""
    from segcli.config import from_dict

    raw = exp.model_dump(mode="json")
    raw["data"]["fold"] = int(fold)
    return from_dict(raw, source=f"fold {fold}")


def parse_folds(text: str, exp: Experiment) -> list[int]:
    """``--fold`` → fold numbers: ``all`` or one number in ``0..K-1``.

    Raises:
        SpecError: the spec has no ``data.folds``, or the value is not a fold.
    """
    k = exp.data.folds
    if k is None:
        raise SpecError(
            f"--fold {text}: the spec has no data.folds; set data.folds: K for K-fold "
            "cross-validation (or --set data.folds=5)"
        )
    if text.strip().lower() == "all":
        return list(range(k))
    try:
        fold = int(text)
    except ValueError:
        fold = -1
    if not 0 <= fold < k:
        raise SpecError(f"--fold {text}: choose a fold in 0..{k - 1} (data.folds is {k}) or all")
    return [fold]


def train_folds(
    exp: Experiment, folds: str | Sequence[int], device: str = "auto", resume: bool = False
) -> CrossValResult:
    """Train ``folds`` (``"all"`` or numbers) of ``exp``; predict and score each fold's
    validation cases; write the out-of-fold evaluation once every fold is done.

    With several folds, a fold already trained is skipped and a partly trained one resumed
    (``resume`` is implied); one fold behaves as ``segcli train`` (``resume`` as given).

    Raises:
        SpecError: see :func:`parse_folds`; everything :func:`segcli.engine.train.fit` raises.
    """
    from segcli.engine.train import fit

    numbers = parse_folds(folds, exp) if isinstance(folds, str) else [int(f) for f in folds]
    if exp.data.root is None:
        raise SpecError(
            "cross-validation scores each fold's validation cases from their files: set "
            "data.root (for the toy data: segcli synth DIR, then --set data.root=DIR)"
        )
    result = CrossValResult(folds=numbers)
    for k in numbers:
        fold_exp = fold_experiment(exp, k)
        run = fold_exp.run_folder
        again = resume or (len(numbers) > 1 and (run / "checkpoint_last.pt").is_file())
        info(f"fold {k} of {exp.data.folds}: {run}")
        fit(fold_exp, device=device, resume=again)
        result.runs.append(run)
        result.fold_csvs.append(validate_fold(fold_exp, device))
    result.out_of_fold = write_out_of_fold(exp)
    return result


def _split(run: Path) -> tuple[list[str], list[str]]:
    import json

    raw = json.loads((run / "split.json").read_text(encoding="utf-8"))
    return list(raw["train"]), list(raw["val"])


def validate_fold(exp: Experiment, device: str) -> Path:
    """Predict fold ``data.fold``'s validation cases into ``<output>/<name>/validation`` (cases
    already there are kept) with its best checkpoint, and score them into
    ``fold_<k>/validation.csv``; returns that path."""
    from segcli.engine.predict import predict_case
    from segcli.engine.runtime import resolve_device
    from segcli.inference.ensemble import load_models
    from segcli.io.checkpoint import resolve_checkpoints
    from segcli.io.dataset import find_cases

    assert exp.data.root is not None
    run = exp.run_folder
    _, val = _split(run)
    out = exp.cv_folder / VALIDATION_DIR
    out.mkdir(parents=True, exist_ok=True)
    todo = [name for name in val if not (out / f"{name}.nii.gz").is_file()]
    if todo:
        device = resolve_device(device)
        paths, _ = resolve_checkpoints(exp, None)
        models = load_models(exp, paths, device)
        files = {c.name: c.images for c in find_cases(exp.data.root, "Tr", check_geometry=False)}
        for name in todo:
            predict_case(exp, models, files[name], out / f"{name}.nii.gz", None, device)
    return score_cases(exp, out, run / "validation.csv", val)


def score_cases(exp: Experiment, pred_dir: Path, csv_path: Path, cases: list[str]) -> Path:
    """Evaluate the label maps of ``cases`` in ``pred_dir`` against the dataset's labelsTr with
    ``exp``'s evaluation settings into ``csv_path`` (cross-validation's and a study's scores)."""
    from segcli.engine.evaluate import evaluate_folders

    assert exp.data.root is not None
    evaluate_folders(
        pred_dir,
        Path(exp.data.root) / "labelsTr",
        csv_path,
        metrics=exp.evaluation.metrics,
        labels=exp.evaluation.labels,
        nsd_tolerance=exp.evaluation.nsd_tolerance,
        regions=exp.regions,
        spec_name=exp.name,
        cases=cases,
    )
    return csv_path


def write_out_of_fold(exp: Experiment) -> Path | None:
    """Score every case by the fold that held it out: ``cv_metrics.csv`` (a last column
    ``fold``), its summary, and ``cv_folds.csv``; None while a fold has not predicted yet."""
    assert exp.data.folds is not None
    fold_of: dict[str, int] = {}
    for k in range(exp.data.folds):
        run = exp.cv_folder / f"fold_{k}"
        if not (run / "validation.csv").is_file():
            return None
        for name in _split(run)[1]:
            fold_of[name] = k
    path = exp.cv_folder / OUT_OF_FOLD_CSV
    score_cases(exp, exp.cv_folder / VALIDATION_DIR, path, sorted(fold_of))
    rows = _add_fold_column(path, fold_of)
    spread = fold_spread(rows, exp.data.folds)
    _write_rows(exp.cv_folder / FOLDS_CSV, spread)
    for row in spread:
        if row["fold"] == "all" and row["metric"] == "dice":
            info(
                f"out of fold, label {row['label']}: Dice {row['mean']:.4f} ± {row['std']:.4f} "
                f"over {exp.data.folds} folds (fold means {row['min']:.4f} to {row['max']:.4f})"
            )
    info(f"wrote {path} and {exp.cv_folder / FOLDS_CSV}")
    return path


def _add_fold_column(path: Path, fold_of: dict[str, int]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        header = list(rows[0]) if rows else ["case", "label"]
    for row in rows:
        row["fold"] = str(fold_of[row["case"]])
    with atomic_open(path, "w", what="the out-of-fold metrics") as handle:
        writer = csv.DictWriter(handle, [*header, "fold"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def fold_spread(rows: list[dict[str, str]], folds: int) -> list[dict[str, Any]]:
    """Per (label, metric): each fold's mean over its cases, then the mean, standard deviation
    (ddof 1), min and max of the fold means (``fold = all``); NaN cells are left out."""
    metrics = [c for c in rows[0] if c not in ("case", "label", "fold")] if rows else []
    by: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        for m in metrics:
            value = float(row[m]) if row[m] not in ("", "nan", "NaN") else math.nan
            by.setdefault((row["label"], m, int(row["fold"])), []).append(value)
    out: list[dict[str, Any]] = []
    labels = sorted({row["label"] for row in rows}, key=lambda v: (len(v), v))
    for label in labels:
        for m in metrics:
            means = []
            for k in range(folds):
                values = np.array(by.get((label, m, k), []), dtype=np.float64)
                values = values[np.isfinite(values)]
                mean = float(values.mean()) if values.size else math.nan
                means.append(mean)
                out.append({"fold": k, "label": label, "metric": m, "mean": mean, "n": values.size})
            finite = np.array([v for v in means if math.isfinite(v)])
            out.append(
                {
                    "fold": "all",
                    "label": label,
                    "metric": m,
                    "mean": float(finite.mean()) if finite.size else math.nan,
                    "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                    "min": float(finite.min()) if finite.size else math.nan,
                    "max": float(finite.max()) if finite.size else math.nan,
                    "n": int(finite.size),
                }
            )
    return out


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["fold", "label", "metric", "mean", "std", "min", "max", "n"]
    with atomic_open(path, "w", what="the fold summary") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c, "")) for c in columns})


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)
