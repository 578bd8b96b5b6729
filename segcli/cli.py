"""The ``segcli`` command line: a thin Typer shell over :mod:`segcli.engine`.

Each command parses its flags, calls one engine function and prints the result.  A user error
(:class:`~segcli.errors.SegcliError`) becomes one paragraph on stderr and exit code 1; ``--debug``
shows the traceback instead.  Heavy imports (torch) happen inside the commands so that
``segcli --help`` is instant.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from segcli.errors import Interrupted, SegcliError, SpecError

if TYPE_CHECKING:
    from segcli.config import Experiment
    from segcli.config.schema import EvaluationSpec

__all__ = ["app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="segcli",
    help="Train, run and evaluate 2D/3D medical image segmentation networks from one YAML spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)

_options = {"debug": False}

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a spec key by dotted path, e.g. --set train.epochs=2 (repeatable).",
        metavar="KEY.PATH=VALUE",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or informational output.")
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
]


def _fail(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print(
        f"[bold red]error:[/] {escape(message)}"
    )


def _user_errors(func: F) -> F:
    """Turn SegcliError into a one-paragraph message and exit code 1 (traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("quiet"):  # `segcli CMD --quiet` works like `segcli --quiet CMD`
            from segcli.engine import runtime

            runtime.set_quiet(True)
        try:
            return func(*args, **kwargs)
        except SegcliError as exc:
            if _options["debug"]:
                raise
            _fail(str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            if _options["debug"]:
                raise
            _fail(str(exc) or "interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or informational output.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    from segcli.engine import runtime

    runtime.set_quiet(quiet)
    _options["debug"] = debug or bool(os.environ.get("SEGCLI_DEBUG"))


def _load(spec: Path, overrides: list[str] | None):  # type: ignore[no-untyped-def]
    from segcli.config import load

    return load(spec, overrides or ())


# --------------------------------------------------------------------------- synth


@app.command()
@_user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Dataset folder to write (nnU-Net/MSD layout).")],
    dims: Annotated[
        int, typer.Option("--dims", help="2 (squares and rings) or 3 (cubes and shells).")
    ] = 2,
    cases: Annotated[int, typer.Option("--cases", help="Number of cases.")] = 100,
    size: Annotated[int, typer.Option("--size", help="Image edge length n (voxels).")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    lesion: Annotated[int, typer.Option("--lesion", help="Lesion edge length m (voxels).")] = 3,
    ring_distance: Annotated[
        int, typer.Option("--ring-distance", help="Ring distance d from the lesion border.")
    ] = 5,
    noise: Annotated[
        float, typer.Option("--noise", help="Background noise standard deviation.")
    ] = 0.1,
    nested: Annotated[
        bool,
        typer.Option(
            "--nested",
            help="Nested toy instead: lesions (label 2) inside an organ (label 1), for regions.",
        ),
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Write the lecture's toy data: lesions that are malign (labelled) only when ringed."""
    from segcli.engine.synth import run_synth

    summary = run_synth(
        out,
        dims=dims,
        cases=cases,
        size=size,
        seed=seed,
        lesion=lesion,
        ring_distance=ring_distance,
        noise=noise,
        nested=nested,
    )
    from segcli.engine.runtime import info

    info(summary)


# --------------------------------------------------------------------------- train


@app.command()
@_user_errors
def train(
    spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Run folder (default: <output>/<name> of the spec)."),
    ] = None,
    device: DeviceOption = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from checkpoint_last.pt.")
    ] = False,
    fold: Annotated[
        str | None,
        typer.Option(
            "--fold",
            help="With data.folds: K, train fold k (0..K-1) or all folds one after another "
            "(resumable); each fold predicts its validation cases, and once all have, "
            "<output>/<name>/cv_metrics.csv scores every case out of fold.",
        ),
    ] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train a network; writes config.yaml, checkpoints, log.csv and curves.png to the run folder."""
    exp = _load(spec, overrides)
    from segcli.engine.train import fit

    try:
        if fold is not None:
            if output is not None:
                raise SpecError("--output names one run folder; with --fold set output / name")
            from segcli.engine.crossval import train_folds

            train_folds(exp, fold, device=device, resume=resume)
        else:
            fit(exp, run_dir=output, device=device, resume=resume)
    except Interrupted as exc:
        import shlex

        again = ["segcli", "train", str(spec), *(["--resume"] if exc.resumable else [])]
        again += ["--fold", fold] if fold is not None else []
        again += ["--output", str(output)] if output is not None else []
        again += ["--device", device] if device != "auto" else []
        again += [part for item in overrides or () for part in ("--set", item)]
        how = "resume with" if exc.resumable else "start again with"
        raise Interrupted(f"{exc}; {how}: {shlex.join(again)}", exc.resumable) from None


@app.command()
@_user_errors
def preprocess(
    spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML) with data.root.")],
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=0, help="Worker processes (default: the cores, at most 4; 0: none)."
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check every cached file's checksum (reads them all); rebuild bad ones.",
        ),
    ] = False,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Crop, resample and index every case of data.root into the preprocessing cache, once.

    train and plan --budget-minutes build it too when missing or stale; a second run reuses it.
    """
    exp = _load(spec, overrides)
    from segcli.engine.preprocess import preprocess_dataset, verify_cache
    from segcli.engine.runtime import info

    try:
        report = preprocess_dataset(exp, workers=workers)
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; the cases finished so far stay cached and the next run (or "
            f"`segcli preprocess {spec}`) goes on with the rest",
            False,
        ) from None
    info(report.summary())
    if verify:
        damaged = verify_cache(report)
        if damaged:  # their index entries go: the next build redoes them
            for name in damaged:
                (report.folder / f"{name}.json").unlink(missing_ok=True)
            report = preprocess_dataset(exp, workers=workers)
            info(f"rebuilt {len(damaged)} case(s) whose files did not match their checksum")
        info(f"verified {len(report.cases)} case(s)")


@app.command()
@_user_errors
def study(
    study_file: Annotated[Path, typer.Argument(help="Study file (YAML): variants and folds.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the study.")],
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            "--budget-minutes",
            help="Wall clock for the whole study, split evenly between its variant × fold runs.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train every variant on the same folds, score out of fold, rank and compare (Holm).

    Writes study.csv, ranking.csv, study.html and best.yaml into --output; resumable.
    """
    from segcli.engine.study import run_study

    try:
        result = run_study(study_file, output, overrides or (), budget_minutes, device)
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; finished folds are kept: run the same command again to go on",
            True,
        ) from None
    from segcli.engine.runtime import info

    info(
        f"wrote {', '.join(str(p) for p in result.files.values())} and {result.best}; "
        f"best: {result.ranking[0].variant}"
    )


# --------------------------------------------------------------------------- predict


@app.command()
@_user_errors
def predict(
    spec: Annotated[
        Path, typer.Argument(help="Experiment spec (YAML) the model was trained with.")
    ],
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Image file, folder of images, DICOM series folder, or folder of series folders.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the label maps.")],
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="Checkpoint(s) to use (default: the run folder's checkpoint_best.pt); "
            "several are ensembled by averaging probabilities.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write class probabilities (float16 .npz).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo cases already predicted.")
    ] = False,
    fold: Annotated[
        int | None,
        typer.Option(
            "--fold",
            help="A cross-validated run (data.folds): fold k's model alone (default: the "
            "ensemble of every trained fold).",
        ),
    ] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Sliding-window inference: one label map per case, on the input's exact geometry."""
    exp = _load(spec, overrides)
    if fold is not None:
        from segcli.engine.crossval import fold_experiment, parse_folds

        exp = fold_experiment(exp, parse_folds(str(fold), exp)[0])
    from segcli.engine.predict import predict_cases

    result = predict_cases(
        exp,
        input,
        output,
        checkpoints=checkpoint or None,
        device=device,
        probabilities=probabilities,
        overwrite=overwrite,
    )
    from segcli.engine.runtime import info

    info(result.summary())
    if result.failed:
        raise SegcliError(
            f"{len(result.failed)} case(s) failed:\n"
            + "\n".join(f"  - {name}: {why}" for name, why in result.failed.items())
        )


# --------------------------------------------------------------------------- evaluate


@app.command()
@_user_errors
def evaluate(
    spec: Annotated[
        Path | None, typer.Argument(help="Optional experiment spec (its evaluation section).")
    ] = None,
    pred: Annotated[
        Path | None, typer.Option("--pred", help="Folder of predicted label maps. [required]")
    ] = None,
    ref: Annotated[
        Path | None, typer.Option("--ref", help="Folder of reference label maps. [required]")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Per-case CSV to write.")] = Path(
        "metrics.csv"
    ),
    metrics: Annotated[
        str | None, typer.Option("--metrics", help="Comma-separated metrics, e.g. dice,hd95,nsd.")
    ] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Comma-separated labels, e.g. 1,2.")
    ] = None,
    nsd_tolerance: Annotated[
        float | None, typer.Option("--nsd-tolerance", help="NSD tolerance in mm (default 1.0).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Parallel worker processes (default: all cores)."),
    ] = None,
    overlays: Annotated[
        Path | None, typer.Option("--overlays", help="Write one overlay PNG per case here.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Images to draw under the overlays.")
    ] = None,
    compare_postprocessing: Annotated[
        bool,
        typer.Option(
            "--compare-postprocessing",
            help="Also report whether each postprocessing step (largest component, min size, "
            "fill holes) raises mean Dice per label; writes FILE_postprocessing.csv.",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write the run's one-file HTML report here."),
    ] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Compare predicted and reference label maps: per-case CSV plus FILE_summary.csv."""
    for value, flag in ((pred, "--pred"), (ref, "--ref")):
        if value is None:
            raise typer.BadParameter(f"Missing option '{flag}'.", param_hint=flag)
    from segcli.engine.evaluate import evaluate_command

    exp = _load(spec, overrides) if spec is not None else None
    if spec is None and overrides:
        raise SegcliError("--set needs an experiment spec (segcli evaluate EXP.yaml --set ...)")
    evaluate_command(
        pred=pred,
        ref=ref,
        output=output,
        evaluation=_evaluation_options(exp, metrics, labels, nsd_tolerance),
        workers=workers,
        overlays=overlays,
        images=images,
        compare_postprocessing=compare_postprocessing,
        postprocess_min_size=exp.inference.postprocess.min_size if exp is not None else 0,
        regions=exp.regions if exp is not None else None,
        report=report,
        spec_name=exp.name if exp is not None else None,
    )


def _evaluation_options(
    exp: Experiment | None, metrics: str | None, labels: str | None, nsd_tolerance: float | None
) -> EvaluationSpec:
    """The spec's ``evaluation`` section (or the defaults) with the flags given applied."""
    from segcli.config.schema import EvaluationSpec

    evaluation = exp.evaluation if exp is not None else EvaluationSpec()
    update: dict[str, Any] = {}
    if metrics is not None:
        update["metrics"] = _parse_metrics(metrics)
    if labels is not None:
        update["labels"] = _parse_labels(labels)
    if nsd_tolerance is not None:
        update["nsd_tolerance"] = nsd_tolerance
    return evaluation.model_copy(update=update)


def _parse_metrics(text: str) -> list[str]:
    """``--metrics dice,HD95`` → ``["dice", "hd95"]``; unknown names fail naming the choices."""
    from segcli.metrics import METRICS

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
    """``--labels 1,2`` → ``[1, 2]``; anything but integers >= 1 fails."""
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


# --------------------------------------------------------------------------- export


@app.command()
@_user_errors
def export(
    spec: Annotated[
        Path, typer.Argument(help="Experiment spec (YAML) the model was trained with.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Model file to write (spec goes to FILE.yaml).")
    ],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="Checkpoint to export (default: the run's checkpoint_best.pt)."
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format", help="torchscript or onnx (onnx needs: pip install 'segcli\\[export]')."
        ),
    ] = "torchscript",
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Export a trained network as one self-contained TorchScript or ONNX file plus its spec."""
    exp = _load(spec, overrides)
    from segcli.engine.export import export_model
    from segcli.engine.runtime import info

    result = export_model(exp, output, format=format, checkpoint=checkpoint)
    for note in result.notes:
        info(note)
    checked = (
        f"reproduces the checkpoint to {result.max_abs_difference:.2g}"
        if result.max_abs_difference == result.max_abs_difference
        else "not checked"
    )
    info(f"wrote {result.path} ({result.format}, {checked}) and {result.spec_path}")


# --------------------------------------------------------------------------- receptive field


@app.command(
    "receptive-field",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
)
@_user_errors
def receptive_field(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML).")],
    empirical: Annotated[
        bool, typer.Option("--empirical", help="Also measure the field from input gradients.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    input_size: Annotated[
        list[int] | None,
        typer.Option(
            "--input-size",
            help="Input size for the per-layer sizes, one per axis: --input-size 572 572 "
            "(default: data.patch_size).",
            min=1,
        ),
    ] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """What the network can see: per-layer sizes, jumps, receptive fields and parameters."""
    # click options take one value each: `--input-size 572 572` leaves the second as an extra
    # argument, which is appended here (SPEC.md spells the option `--input-size N N [N]`).
    extra = list(ctx.args)
    if extra:
        if input_size is None or not all(a.isdigit() and int(a) > 0 for a in extra):
            raise SegcliError(
                f"unexpected argument(s) {' '.join(extra)}; usage: segcli receptive-field "
                "EXP.yaml [--empirical] [--json] [--input-size N N [N]] [--set KEY=VALUE]"
            )
        input_size = [*input_size, *(int(a) for a in extra)]
    exp = _load(spec, overrides)
    from segcli.engine.receptive import receptive_field_command

    receptive_field_command(exp, input_size=input_size, empirical=empirical, as_json=as_json)


# --------------------------------------------------------------------------- plan


@app.command()
@_user_errors
def plan(
    data_root: Annotated[Path, typer.Argument(help="Dataset folder (nnU-Net/MSD layout).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Spec (YAML) to write.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Experiment name (default: the folder name).")
    ] = None,
    dims: Annotated[
        str, typer.Option("--dims", help="auto (as the images), 2 (per slice) or 3.")
    ] = "auto",
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            "--budget-minutes",
            help="Wall clock for `segcli train`, validation included: the plan times training "
            "steps here and sizes network and schedule to fit.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    gpu_memory: Annotated[
        float | None,
        typer.Option("--gpu-memory", help="GPU memory target in GB for patch and batch (8)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Plan a spec for a dataset (nnU-Net's rules, explained and checked, fitted to a budget)."""
    from segcli.engine.plan import plan_command

    plan_command(
        data_root,
        output,
        name=name,
        dims=dims,
        budget_minutes=budget_minutes,
        device=device,
        gpu_memory=gpu_memory,
        as_json=as_json,
    )


# --------------------------------------------------------------------------- report


@app.command()
@_user_errors
def report(
    csvs: Annotated[
        list[Path],
        typer.Argument(
            help="Evaluate CSV(s): one for a run's report, several to compare runs on the same cases.",
            metavar="METRICS.CSV",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    names: Annotated[
        str | None, typer.Option("--names", help="Comma-separated run names, one per CSV.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Images under the overlays (default: recorded).")
    ] = None,
    pred: Annotated[
        str | None,
        typer.Option(
            "--pred", help="Prediction folder(s), comma-separated, one per CSV (default: recorded)."
        ),
    ] = None,
    ref: Annotated[
        Path | None, typer.Option("--ref", help="Reference folder (default: recorded).")
    ] = None,
    worst: Annotated[
        int, typer.Option("--worst", help="Worst cases per label shown with an overlay.")
    ] = 5,
    quiet: QuietOption = False,
) -> None:
    """One self-contained HTML report of an evaluation, or a comparison of several runs."""
    from segcli.engine.report import report_command

    report_command(csvs, output, names=names, images=images, pred=pred, ref=ref, worst=worst)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="segcli")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
