"""docs/spec.md, the reference page: every spec key, then every file segcli writes.

    >>> from segcli.engine.reference import render
    >>> text = render()                      # what ``make docs`` writes to docs/spec.md
    $ python -m segcli.engine.reference docs/spec.md

Nothing on the page is typed twice.  The spec tables come from the schema
(:mod:`segcli.config.reference`).  The file tables come from the code that writes the files: a
run folder is written for real into a temporary folder (:class:`~segcli.engine.run_dir.RunDir`,
the precision record, a checkpoint, the log), evaluate's sidecar by
:func:`segcli.report.data.write_meta`, and columns from the writers' constants, and the names,
keys and columns are read back from what was written.  Only the one-line meanings of files and
file keys live here (:data:`RUN_FILES` and the ``*_KEYS`` tables, or the writer's docstring);
a file or key written without a meaning is a :class:`MissingMeaning` naming it, and so is a
meaning that nothing writes any more.  tests/config/test_spec_reference.py fails when
docs/spec.md differs from :func:`render`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.config.reference import (
    MissingMeaning,
    anchor,
    one_line,
    spec_markdown,
    spec_sections,
    table_cell,
)

__all__ = ["RUN_FILES", "render"]

RUN_HEADING = "The run folder of `segcli train`"
CROSSVAL_HEADING = "Cross-validation (`data.folds: K`, `segcli train --fold k|all`)"
EVALUATE_HEADING = "`segcli evaluate --output FILE.csv`"

# --------------------------------------------------------------------------- files

#: The files of a run folder: name → (when it is written, what it holds).  Every file that
#: :func:`_write_run_folder` finds written must be here, and nothing else.
RUN_FILES: dict[str, tuple[str, str]] = {
    "config.yaml": (
        "start of a new run",
        "the resolved spec: every key of the tables above, defaults spelled out, retired keys "
        "left out; an ordinary spec (`segcli predict <run>/config.yaml ...` uses the run's "
        "settings); the checkpoints hold the same spec",
    ),
    "split.json": ("start of a new run", "the training / validation case split (keys below)"),
    "checkpoint_last.pt": (
        "end of every epoch",
        "the resumable state of the last complete epoch (keys below)",
    ),
    "checkpoint_best.pt": (
        "when the mean validation Dice improves (no validation cases: the last epoch)",
        "the same keys, of the best epoch; what `predict` uses by default",
    ),
    "log.csv": ("rewritten whole every epoch", "one row per epoch (columns below)"),
    "curves.png": (
        "after each validation, at the last epoch, else at most every 30 s",
        "training and validation loss, and mean validation Dice, per epoch",
    ),
    "normalization.json": (
        "start of a new run, with `data.normalization: ct_auto`",
        "the training set's foreground intensity statistics, one value per channel (keys below)",
    ),
    "spacing.json": (
        "start of a new run, when `data.spacing` resamples",
        "the spacing the cases were resampled to (keys below)",
    ),
    "precision.json": (
        "start of every run and every `--resume` (rank 0 writes it)",
        "the precision the network trains in and why (keys below)",
    ),
    ".lock": (
        "while `segcli train` runs; removed at the end",
        "the PID of the training process holding the folder (a second `train` is refused)",
    ),
}

_HERE = "segcli/engine/reference.py"
LOG_KEYS = {
    "epoch": "0-based epoch",
    "train_loss": "mean training loss of the epoch",
    "val_loss": "mean validation loss (empty: not validated this epoch)",
    "val_dice": "mean foreground validation Dice (empty: not validated this epoch)",
    "lr": "learning rate at the end of the epoch",
    "seconds": "wall time of the epoch",
}
SPLIT_KEYS = {"train": "training case names", "val": "validation case names (may be empty)"}
SPACING_KEYS = {"spacing": "target spacing in mm, array axis order"}
NORMALIZATION_KEYS = {
    "low": "0.5 percentile of the foreground intensities (clipping window)",
    "high": "99.5 percentile of the foreground intensities (clipping window)",
    "mean": "mean of the clipped foreground intensities",
    "std": "standard deviation of the clipped foreground intensities",
}
PRECISION_KEYS = {
    "precision": "what the network runs in: fp32, bf16 or fp16 (never auto)",
    "requested": "what `train.precision` asked for",
    "device": "device type (cpu, cuda, ...)",
    "reason": "one sentence on why this precision was chosen",
    "channels_last": "whether activations use the channels-last memory layout",
}
FORMAT_KEY = "format_version"
META_KEYS = {
    "format": "record format name and version",
    "csv": "file name of the CSV it describes",
    "segcli_version": "the segcli version that wrote it",
    "created": "when it was written (UTC)",
    "spec_name": "the experiment's `name` when a spec was given, else null",
    "pred_dir": "the prediction folder (absolute)",
    "ref_dir": "the reference folder (absolute)",
    "images_dir": "the image folder (absolute; null without `--images`)",
    "metrics": "the metric columns, in order",
    "labels": "the labels (or region numbers) scored",
    "label_names": "label → name, from dataset.json or the spec's regions",
    "nsd_tolerance": "NSD tolerance in mm",
    "ndim": "2 or 3: the label maps' dimensionality",
    "voxels": "case → label → [reference voxels, predicted voxels], so a report can say why a "
    "distance is empty",
}
POSTPROCESSING_KEYS = {
    "step": "the postprocessing step",
    "label": "the label",
    "dice_before": "mean Dice over the cases without the step",
    "dice_after": "mean Dice with the step",
    "delta": "dice_after − dice_before",
    "keep": "nnU-Net's rule: true when the step raises the mean Dice",
    "n": "number of cases",
}
FOLDS_KEYS = {
    "fold": "the fold, or `all` for the spread over the folds",
    "label": "the label",
    "metric": "the metric",
    "mean": "the fold's mean over its cases; for `all`: the mean of the fold means",
    "std": "`all` only: standard deviation of the fold means (ddof 1)",
    "min": "`all` only: smallest fold mean",
    "max": "`all` only: largest fold mean",
    "n": "cases with a value (`all`: folds with a mean)",
}


@dataclass(frozen=True)
class _RunFolder:
    """What :func:`_write_run_folder` found: file names and each file's keys or columns."""

    files: tuple[str, ...]
    keys: dict[str, tuple[str, ...]]


def _write_run_folder() -> _RunFolder:
    """Write a run folder's files with segcli's own writers into a temporary folder."""
    import numpy as np
    import torch
    from torch import nn

    from segcli.config import from_dict
    from segcli.data.statistics import stats_from_samples
    from segcli.engine import runtime
    from segcli.engine.execution import Execution, announce_precision
    from segcli.engine.run_dir import LOG_COLUMNS, RunDir
    from segcli.io.checkpoint import Checkpoint
    from segcli.precision import resolve_precision

    exp = from_dict({"data": {"synthetic": {}}, "model": {"arch": "cnn"}}, source="docs")
    stats = stats_from_samples([np.arange(8, dtype=np.float32)])
    choice = resolve_precision("fp32", "cpu")
    execution = Execution(
        nn.Identity(), torch.contiguous_format, choice.autocast, choice.grad_scaler(), choice
    )
    row = {column: 0.5 for column in LOG_COLUMNS} | {"epoch": 0}  # one epoch's log row
    quiet = runtime.is_quiet()
    runtime.set_quiet(True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir(Path(tmp) / "run")
            with run.lock():
                written = {p.name for p in run.path.iterdir()}  # the lock file
                run.write_start(exp, ["case_0"], ["case_1"], stats, (1.0, 1.0))
                announce_precision(run, execution, None, True)
                run.save_checkpoint(Checkpoint(model={}), best=True)
                run.write_log([row])
                names = sorted(written | {p.name for p in run.path.iterdir()})
                keys = {
                    name: tuple(json.loads((run.path / name).read_text()))
                    for name in names
                    if name.endswith(".json")
                }
                state = torch.load(run.last, weights_only=True)
                keys[run.last.name] = tuple(state)
                with run.log.open(newline="") as handle:
                    keys[run.log.name] = tuple(next(csv.reader(handle)))
            declared = [getattr(run, f.name).name for f in dataclasses.fields(run) if not f.init]
    finally:
        runtime.set_quiet(quiet)
    files = tuple(dict.fromkeys([*declared, *names]))
    return _RunFolder(files, keys)


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of ``cls``'s docstring
    (``a, b: text`` documents both; continuation lines are joined)."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    names: list[str] = []
    inside = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        match = re.match(r"^\s{8}([\w, ]+):\s*(.*)$", line)
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for name in names:
                out[name] = match.group(2)
        elif line.startswith(" " * 12) and names:
            for name in names:
                out[name] += " " + line.strip()
        elif line.strip():
            break
    return out


def _key_table(
    what: str,
    keys: tuple[str, ...],
    meanings: Mapping[str, str],
    head: str = "key",
    where: str = _HERE,
) -> list[str]:
    """A two-column table of ``keys`` in written order; every key needs a meaning (from
    ``where``) and every meaning a key."""
    problems = []
    missing = [k for k in keys if k not in meanings]
    if missing:
        problems.append(f"written without a meaning in {where}: {', '.join(missing)}")
    stale = [k for k in meanings if k not in keys]
    if stale:
        problems.append(f"described in {where} but no longer written: {', '.join(stale)}")
    if problems:
        raise MissingMeaning(f"{what}: {'; '.join(problems)}; update it, then run make docs")
    lines = [f"| {head} | meaning |", "|---|---|"]
    rows: list[tuple[list[str], str]] = []
    for key in keys:  # neighbours documented together (``a, b: text``) share a row
        meaning = one_line(meanings[key]) or ""
        if rows and rows[-1][1] == meaning:
            rows[-1][0].append(key)
        else:
            rows.append(([key], meaning))
    lines += [
        f"| {', '.join(f'`{k}`' for k in names)} | {table_cell(text)} |" for names, text in rows
    ]
    return [*lines, ""]


def _files_part() -> list[str]:
    from segcli.engine import crossval

    return [*_run_folder_part(), *_crossval_part(crossval), *_evaluate_part()]


def _run_folder_part() -> list[str]:
    from segcli.io.checkpoint import FORMAT_VERSION, Checkpoint

    run = _write_run_folder()
    problems = []
    unknown = [name for name in run.files if name not in RUN_FILES]
    if unknown:
        problems.append(f"files written without a meaning in RUN_FILES: {', '.join(unknown)}")
    stale = [name for name in RUN_FILES if name not in run.files]
    if stale:
        problems.append(f"RUN_FILES names files no longer written: {', '.join(stale)}")
    if problems:
        raise MissingMeaning(
            f"run folder: {'; '.join(problems)}; update RUN_FILES in {_HERE}, then run make docs"
        )
    lines = [
        "## Files",
        "",
        f"### {RUN_HEADING}",
        "",
        "`<output>/<name>/` (with `data.fold: k`, `<output>/<name>/fold_<k>/`). Every file "
        "appears whole or not at all (written to a temporary file, then renamed).",
        "",
        "| file | written | contents |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {RUN_FILES[name][0]} | {RUN_FILES[name][1]} |" for name in run.files]
    lines.append("")
    checkpoint_docs = _attribute_docs(Checkpoint)
    checkpoint_docs[FORMAT_KEY] = (
        f"layout version of the file ({FORMAT_VERSION}); others are refused"
    )
    checkpoint_where = "the Attributes of Checkpoint's docstring (segcli/io/checkpoint.py)"
    for name, meanings, intro, where in (
        ("split.json", SPLIT_KEYS, "", _HERE),
        ("log.csv", LOG_KEYS, "Columns (an empty cell: not measured that epoch):", _HERE),
        (
            "checkpoint_last.pt",
            checkpoint_docs,
            "`checkpoint_last.pt` and `checkpoint_best.pt`: a plain dict of tensors, numbers, "
            "strings, lists and dicts, read by `torch.load(path, weights_only=True)`:",
            checkpoint_where,
        ),
        ("precision.json", PRECISION_KEYS, "", _HERE),
        ("normalization.json", NORMALIZATION_KEYS, "", _HERE),
        ("spacing.json", SPACING_KEYS, "", _HERE),
    ):
        lines += [f"#### {name}", ""] + ([intro, ""] if intro else [])
        head = "column" if name.endswith(".csv") else "key"
        lines += _key_table(name, run.keys[name], meanings, head, where)
    return lines


def _evaluate_part() -> list[str]:
    from segcli.engine.metrics_output import POSTPROCESSING_COLUMNS, postprocessing_csv_path
    from segcli.metrics.summary import SUMMARY_COLUMNS, SummaryRow
    from segcli.report.data import meta_path

    csv_name = Path("FILE.csv")
    postprocessing, meta = postprocessing_csv_path(csv_name).name, meta_path(csv_name).name
    lines = [
        f"### {EVALUATE_HEADING}",
        "",
        "| file | contents |",
        "|---|---|",
        "| `FILE.csv` | one row per case and label: `case,label,<metrics in the order asked>`; "
        "empty cell = NaN |",
        f"| `FILE_summary.csv` | one row per label and metric: `{','.join(SUMMARY_COLUMNS)}` |",
        f"| `{postprocessing}` | with `--compare-postprocessing`: one row per step and label: "
        f"`{','.join(POSTPROCESSING_COLUMNS)}` |",
        f"| `{meta}` | where the label maps are and what was scored, for `segcli report` "
        "(keys below) |",
        "",
        "#### FILE_summary.csv",
        "",
    ]
    summary_where = "the Attributes of SummaryRow's docstring (segcli/metrics/summary.py)"
    summary_docs = _attribute_docs(SummaryRow)
    lines += _key_table("FILE_summary.csv", SUMMARY_COLUMNS, summary_docs, "column", summary_where)
    lines += [f"#### {postprocessing}", ""]
    lines += _key_table(postprocessing, POSTPROCESSING_COLUMNS, POSTPROCESSING_KEYS, "column")
    lines += [f"#### {meta}", ""]
    return lines + _key_table(meta, _meta_keys(), META_KEYS)


def _crossval_part(crossval: Any) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / crossval.FOLDS_CSV
        crossval._write_rows(path, [])  # the writer itself gives the header
        with path.open(newline="") as handle:
            columns = tuple(next(csv.reader(handle)))
    cv = crossval.OUT_OF_FOLD_CSV
    lines = [
        f"### {CROSSVAL_HEADING}",
        "",
        "| path in `<output>/<name>/` | contents |",
        "|---|---|",
        "| `fold_<k>/` | fold k's run folder (above; its `config.yaml` has `data.fold: k`) and "
        "`validation.csv`: its validation cases scored (evaluate's columns) |",
        f"| `{crossval.VALIDATION_DIR}/` | every case's label map, predicted by the fold that "
        "held it out |",
        f"| `{cv}` | out-of-fold evaluation of every case: evaluate's columns and a last "
        f"column `fold`; with `{Path(cv).stem}_summary.csv` and `{Path(cv).stem}_meta.json` |",
        f"| `{crossval.FOLDS_CSV}` | each fold's mean per label and metric and the spread "
        "between folds (columns below) |",
        "",
        f"#### {crossval.FOLDS_CSV}",
        "",
    ]
    return lines + _key_table(crossval.FOLDS_CSV, columns, FOLDS_KEYS, "column")


def _meta_keys() -> tuple[str, ...]:
    from segcli.report.data import write_meta

    with tempfile.TemporaryDirectory() as tmp:
        path = write_meta(
            Path(tmp) / "FILE.csv",
            pred_dir=tmp,
            ref_dir=tmp,
            images_dir=None,
            metrics=("dice",),
            labels=(1,),
            label_names={},
            nsd_tolerance=1.0,
            voxels={},
        )
        return tuple(json.loads(path.read_text()))


# --------------------------------------------------------------------------- page


def render() -> str:
    """The whole page, as ``make docs`` writes it to docs/spec.md.

    Raises:
        MissingMeaning: a spec key without a docstring, or a file or file key written
            without a meaning here (or a meaning nothing writes any more), naming each.
    """
    sections = spec_sections()
    spec_part = spec_markdown(sections)
    lines = [
        "# Spec and file reference",
        "",
        "<!-- written by `make docs` (python -m segcli.engine.reference docs/spec.md) from "
        "segcli/config/schema.py and the code that writes each file; edit those, not this page "
        "(tests/config/test_spec_reference.py fails when it is stale) -->",
        "",
        "Every key of the YAML experiment spec that `segcli train`, `predict`, `evaluate`, "
        "`receptive-field`, `preprocess` and `export` read, with its type, default and "
        "meaning; then every file a run and an evaluation write. Keys are dotted paths, as "
        "`--set` takes them (`--set data.patch_size=[64,64]`); an unknown key is an error.",
        "",
        "Types: `int > 0`, `float in [0, 1)` are ranges; `a | b` lists the allowed values; "
        "`null` is YAML's null (`~`); `list[T]` a YAML list; `map K → V` a mapping; `required` "
        "means there is no default. Spatial lists are in array axis order (z, y, x).",
        "",
        "- [Spec keys](#spec-keys): " + ", ".join(f"[{s.title}](#{s.anchor})" for s in sections),
        "- [Retired keys and values](#retired-keys-and-values)",
        f"- [Files](#files): [the run folder](#{anchor(RUN_HEADING)}), "
        f"[cross-validation](#{anchor(CROSSVAL_HEADING)}), [evaluate](#{anchor(EVALUATE_HEADING)})",
        "",
    ]
    lines += spec_part
    lines += _files_part()
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m segcli.engine.reference docs/spec.md", file=sys.stderr)
        return 2
    try:
        text = render()
    except MissingMeaning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = Path(argv[0])
    from segcli.atomic import atomic_open

    with atomic_open(target, "w", what="the reference page") as handle:
        handle.write(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
