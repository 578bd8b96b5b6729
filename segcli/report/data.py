"""Reading an evaluate CSV back, and the sidecar that records where its label maps were.

``segcli evaluate -o m.csv`` writes ``m.csv`` (columns ``case,label,<metrics>``: a public
contract, never extended) and, beside it, ``m_meta.json``: the prediction, reference and image
folders (absolute), the spec name, metrics, labels and their names, the NSD tolerance, the voxel
counts per case and label (so the report can say *why* a distance is NaN), the segcli version and
the date.  The report works from the CSV alone; the sidecar (or the command's folder flags) adds
the overlays and the checks that need the label maps.

    >>> run = load_run("metrics.csv")
    >>> run.values["case_001"][1]["dice"]
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from segcli.atomic import atomic_open
from segcli.errors import DataError

__all__ = ["META_FORMAT", "Run", "load_run", "meta_path", "write_meta"]

#: ``format`` key of the sidecar; bumped when its meaning changes.
META_FORMAT = "segcli-evaluate-meta/1"


def meta_path(csv_path: str | Path) -> Path:
    """The sidecar of ``csv_path``: ``<stem>_meta.json`` in the same folder."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_meta.json")


def write_meta(
    csv_path: str | Path,
    *,
    pred_dir: str | Path,
    ref_dir: str | Path,
    images_dir: str | Path | None,
    metrics: tuple[str, ...],
    labels: tuple[int, ...],
    label_names: dict[int, str],
    nsd_tolerance: float,
    voxels: dict[str, dict[int, tuple[int, int]]],
    spec_name: str | None = None,
    ndim: int | None = None,
) -> Path:
    """Write the sidecar of ``csv_path`` atomically; returns its path.

    Args:
        csv_path: the evaluate CSV it describes.
        pred_dir, ref_dir, images_dir: folders (stored absolute; ``images_dir`` may be None).
        metrics, labels, label_names, nsd_tolerance: what was scored.
        voxels: ``{case: {label: (reference voxels, predicted voxels)}}``.
        spec_name: the experiment's ``name`` when a spec was given.
        ndim: 2 or 3 (the label maps' dimensionality).
    """
    from segcli import __version__

    record: dict[str, Any] = {
        "format": META_FORMAT,
        "csv": Path(csv_path).name,
        "segcli_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "spec_name": spec_name,
        "pred_dir": str(Path(pred_dir).resolve()),
        "ref_dir": str(Path(ref_dir).resolve()),
        "images_dir": str(Path(images_dir).resolve()) if images_dir is not None else None,
        "metrics": list(metrics),
        "labels": list(labels),
        "label_names": {str(k): v for k, v in label_names.items()},
        "nsd_tolerance": nsd_tolerance,
        "ndim": ndim,
        "voxels": {
            case: {str(label): list(counts) for label, counts in per.items()}
            for case, per in voxels.items()
        },
    }
    path = meta_path(csv_path)
    with atomic_open(path, "w", what="the evaluation record") as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    return path


@dataclass
class Run:
    """One evaluate CSV read back (with its sidecar when present).

    Attributes:
        name: display name (``--names``, else the CSV's stem).
        csv: the CSV path.
        metrics: metric columns, in CSV order.
        labels: labels, ascending.
        cases: case ids, in CSV order.
        values: ``{case: {label: {metric: value}}}`` (NaN for empty cells).
        meta: the sidecar's record (empty when there is none).
        pred_dir, ref_dir, images_dir: where the label maps and images are (None: unknown).
        extra: rows of labels that are not scored in every case — stray prediction labels,
            which evaluate writes only for the cases that have them: ``{label: {case: values}}``.
    """

    name: str
    csv: Path
    metrics: tuple[str, ...]
    labels: tuple[int, ...]
    cases: tuple[str, ...]
    values: dict[str, dict[int, dict[str, float]]]
    meta: dict[str, Any] = field(default_factory=dict)
    pred_dir: Path | None = None
    ref_dir: Path | None = None
    images_dir: Path | None = None
    extra: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def label_names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.meta.get("label_names", {}).items()}

    def label_title(self, label: int) -> str:
        name = self.label_names.get(label)
        return f"label {label}" + (f" ({name})" if name else "")

    def column(self, label: int, metric: str) -> list[float]:
        """The metric's values for ``label``, one per case in :attr:`cases` order."""
        return [self.values[case][label][metric] for case in self.cases]

    def voxels(self, case: str, label: int) -> tuple[int, int] | None:
        """(reference, predicted) voxel counts from the sidecar, or None."""
        counts = self.meta.get("voxels", {}).get(case, {}).get(str(label))
        return (int(counts[0]), int(counts[1])) if counts else None


def _not_evaluate(path: Path, why: str) -> DataError:
    return DataError(
        f"{path}: not a segcli evaluate CSV ({why}); expected the per-case file written by "
        "`segcli evaluate --output FILE.csv` with columns case,label,<metrics>"
    )


def _parse_cell(text: str, path: Path, line: int, column: str) -> float:
    if text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise _not_evaluate(
            path, f"line {line}, column {column}: {text!r} is not a number"
        ) from None


def load_run(
    csv_path: str | Path,
    name: str | None = None,
    pred_dir: str | Path | None = None,
    ref_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
) -> Run:
    """Read an evaluate CSV (and its sidecar); folder arguments override the sidecar's.

    Raises:
        DataError: the file is missing or unreadable, or is not an evaluate CSV (names the file
            and the first problem: header, unknown metric column, bad label or value, a
            repeated (case, label) row, a case missing a label).
    """
    from segcli.metrics import METRICS

    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"{path}: metrics CSV not found")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the metrics CSV ({exc})") from None
    if not rows or len(rows[0]) < 3 or [c.strip() for c in rows[0][:2]] != ["case", "label"]:
        header = ",".join(rows[0])[:80] if rows else "empty file"
        raise _not_evaluate(path, f"header is {header!r}")
    if rows and rows[0] and rows[0][-1].strip() == "fold":  # cross-validation: cv_metrics.csv
        rows = [row[:-1] if row else row for row in rows]
    metrics = tuple(c.strip() for c in rows[0][2:])
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise _not_evaluate(path, f"unknown metric column {unknown[0]!r}")
    if len(set(metrics)) != len(metrics):
        raise _not_evaluate(path, "a metric column appears twice")
    values: dict[str, dict[int, dict[str, float]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(metrics) + 2:
            raise _not_evaluate(
                path, f"line {line} has {len(row)} cells, the header {len(metrics) + 2}"
            )
        case, label_text = row[0], row[1].strip()
        if not label_text.isdigit() or int(label_text) < 1:
            raise _not_evaluate(path, f"line {line}: label {label_text!r} is not an integer >= 1")
        label = int(label_text)
        per_case = values.setdefault(case, {})
        if label in per_case:
            raise _not_evaluate(path, f"line {line}: case '{case}' label {label} appears twice")
        per_case[label] = {
            m: _parse_cell(cell, path, line, m) for m, cell in zip(metrics, row[2:], strict=True)
        }
    if not values:
        raise _not_evaluate(path, "no data rows")
    meta = _read_meta(path)
    found = sorted({label for per in values.values() for label in per})
    if meta.get("labels"):
        labels = tuple(
            int(v) for v in meta["labels"] if any(int(v) in per for per in values.values())
        )
    else:  # scored labels have a row in every case; stray-label rows only where predicted
        labels = tuple(lbl for lbl in found if all(lbl in per for per in values.values()))
    if not labels:
        raise _not_evaluate(path, f"no label has a row for every case (labels {found})")
    for case, per in values.items():
        missing = [label for label in labels if label not in per]
        if missing:
            raise _not_evaluate(path, f"case '{case}' has no row for label {missing[0]}")
    extra: dict[int, dict[str, dict[str, float]]] = {}
    for case, per in values.items():
        for label in [lbl for lbl in per if lbl not in labels]:
            extra.setdefault(label, {})[case] = per.pop(label)

    def folder(given: str | Path | None, key: str) -> Path | None:
        if given is not None:
            return Path(given).resolve()
        stored = meta.get(key)
        return Path(stored) if stored else None

    return Run(
        name=name or path.stem,
        csv=path,
        metrics=metrics,
        labels=labels,
        cases=tuple(values),
        values=values,
        meta=meta,
        pred_dir=folder(pred_dir, "pred_dir"),
        ref_dir=folder(ref_dir, "ref_dir"),
        images_dir=folder(images_dir, "images_dir"),
        extra=extra,
    )


def _read_meta(csv_path: Path) -> dict[str, Any]:
    """The sidecar's record, or ``{}`` when there is none."""
    side = meta_path(csv_path)
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{side}: cannot read the evaluation record ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DataError(f"{side}: not a segcli evaluation record (format {META_FORMAT})")
    return meta
