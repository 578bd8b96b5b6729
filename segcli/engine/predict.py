"""``segcli predict``: images in, one label map per case out, on the input's exact geometry.

    >>> from segcli.config import load
    >>> from segcli.engine.predict import predict_cases
    >>> result = predict_cases(load("exp.yaml"), "data/imagesTs", "pred", device="cpu")
    >>> result.written, result.skipped, result.failed
    (['case_000', 'case_001'], [], {})

This module orchestrates; each step has its home:

- inputs: :func:`segcli.io.dataset.find_inputs` groups ``<case>_0000``, ``_0001`` ... files,
  :func:`segcli.io.dataset.read_case` checks they share one grid and that their number is
  ``model.in_channels``;
- checkpoints: :func:`segcli.io.checkpoint.resolve_checkpoints` picks them,
  :func:`segcli.inference.ensemble.load_models` loads them after the one spec check
  (:func:`segcli.io.checkpoint.check_compatible`);
- probabilities: :func:`segcli.inference.volume.predict_volume` preprocesses exactly as
  training does (crop to the non-zero region, resample to the spacing the checkpoint was
  trained at, ``data.normalization`` with the dataset statistics stored in the checkpoint for
  ``ct_auto``), runs the sliding windows slab by slab (or overlap-tile for valid-padding
  networks) with the spec's ``inference`` settings, resamples the probabilities linearly back
  onto the cropped input grid (several checkpoints: averaged there, float16) and pastes the
  labels into the input's full grid — in memory bounded per voxel (docs/benchmarks.md);
- labels: :func:`segcli.inference.decode.decode_labels` (argmax; multilabel: value ``k + 1``
  where channel ``k`` exceeds 0.5, the highest such ``k`` winning, as in training's
  validation; with ``regions``, each region's own label value, later regions on top:
  :mod:`segcli.labels`), then ``inference.postprocess`` (:mod:`segcli.postprocess`).

Output: ``<case>.nii.gz`` (channel suffix dropped) with the first channel's size, spacing,
origin and direction; ``probabilities=True`` also writes ``<case>_probabilities.npz`` (key
``probabilities``: float16 ``(classes, *spatial)``, every channel).

Every file is written atomically (temp file + rename), the label map last: a case whose label
map exists is done and is skipped unless ``overwrite``; a case that fails leaves no file of its
own and is reported in :attr:`PredictResult.failed` while the other cases go on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli.atomic import atomic_open
from segcli.config import Experiment
from segcli.engine import distributed
from segcli.engine.runtime import check_writable_folder, info, progress_bar, resolve_device
from segcli.errors import DataError, SegcliError, SpecError
from segcli.inference.ensemble import LoadedModel, load_models
from segcli.inference.volume import predict_volume
from segcli.io.checkpoint import resolve_checkpoints
from segcli.io.dataset import find_inputs, read_case
from segcli.io.images import make_geometry, write_image

__all__ = ["PredictResult", "predict_case", "predict_cases"]


@dataclass
class PredictResult:
    """What :func:`predict_cases` did.

    Attributes:
        output_dir: where the label maps are.
        checkpoints: the checkpoint file(s) used (several: an ensemble).
        written: cases predicted now.
        skipped: cases whose label map already existed (``overwrite=False``).
        failed: case → why (the case left no file).
        notes: remarks worth showing (e.g. fell back to checkpoint_last.pt).
        seconds: wall time.
    """

    output_dir: Path
    checkpoints: list[Path]
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the console."""
        names = ", ".join(p.name for p in self.checkpoints)
        parts = [f"predicted {len(self.written)} case(s) into {self.output_dir}"]
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} already there (--overwrite to redo)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return f"{'; '.join(parts)} in {self.seconds:.1f} s with {names}"


# --------------------------------------------------------------------------- entry point


def predict_cases(
    exp: Experiment,
    input: str | Path,
    output_dir: str | Path,
    checkpoints: list[str | Path] | list[Path] | None = None,
    device: str = "auto",
    probabilities: bool = False,
    overwrite: bool = False,
) -> PredictResult:
    """Predict every case of ``input`` (a file or a folder of images) into ``output_dir``.

    Args:
        exp: the experiment the checkpoint(s) were trained with.
        input: one image file (its sibling ``_0001`` ... channel files are picked up) or a
            folder of images (e.g. ``DATASET/imagesTs``).
        output_dir: folder for ``<case>.nii.gz`` (created if needed).
        checkpoints: checkpoint files; default the run folder's ``checkpoint_best.pt``
            (``checkpoint_last.pt`` if training never wrote a best one).  Several: ensemble.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        probabilities: also write ``<case>_probabilities.npz`` (float16).
        overwrite: redo cases whose label map exists.

    Returns:
        A :class:`PredictResult`; per-case failures are in ``failed``, not raised.  Under
        torchrun every rank predicts its share of the cases (``cases[rank::world]``, each case
        exactly once, on ``cuda:LOCAL_RANK``) and returns the gathered result of all ranks.

    Raises:
        SegcliError: no input images, a checkpoint trained at another spacing (data.spacing),
            missing, corrupt or mismatched checkpoint, unusable device or output folder.
    """
    with distributed.session(device) as ctx:
        return _predict_cases(
            exp, input, output_dir, checkpoints, ctx.device, probabilities, overwrite
        )


def _predict_cases(
    exp: Experiment,
    input: str | Path,
    output_dir: str | Path,
    checkpoints: list[str | Path] | list[Path] | None,
    device: str,
    probabilities: bool,
    overwrite: bool,
) -> PredictResult:
    start = time.perf_counter()
    from segcli.models import check_input_size

    # a window the network cannot process fails here, before any case, naming the key
    check_input_size(exp.model, exp.inference.patch_size, key="inference.patch_size")
    cases = find_inputs(input)
    paths, notes = resolve_checkpoints(exp, checkpoints)
    for note in notes:
        info(note)
    device = resolve_device(device)
    models = load_models(exp, paths, device)
    if exp.ensemble and checkpoints:
        info("--checkpoint given: the spec's ensemble members are left out")
    elif exp.ensemble:
        for folder in exp.ensemble:
            member, member_paths = ensemble_member(exp, folder)
            models += load_models(member, member_paths, device, member=True)
            paths = [*paths, *member_paths]
            info(f"ensemble member {folder}: {len(member_paths)} model(s)")
    from segcli.precision import resolve_precision

    info(f"precision {resolve_precision(exp.inference.precision, device).describe()}")
    output_dir = Path(output_dir)
    check_writable_folder(output_dir, "--output")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{output_dir}: cannot create the output folder ({exc.strerror})") from None

    result = PredictResult(output_dir=output_dir, checkpoints=paths, notes=notes)
    names = distributed.shard(list(cases))  # torchrun: each case on exactly one rank
    error: SpecError | None = None
    try:
        with progress_bar() as bar:
            task = bar.add_task("predicting", total=len(names), status="")
            for name in names:
                files = cases[name]
                bar.update(task, status=name)
                unsafe = _unsafe_case_name(name, output_dir)
                if unsafe is not None:
                    result.failed[name] = unsafe
                    bar.advance(task)
                    continue
                label_path = output_dir / f"{name}.nii.gz"
                prob_path = output_dir / f"{name}_probabilities.npz"
                done = label_path.exists() and (not probabilities or prob_path.exists())
                if done and not overwrite:
                    result.skipped.append(name)
                else:
                    try:
                        prob = prob_path if probabilities else None
                        predict_case(exp, models, files, label_path, prob, device)
                        result.written.append(name)
                    except SpecError:
                        raise  # the network or spec cannot work at all: no point going on
                    except SegcliError as exc:
                        result.failed[name] = str(exc)
                bar.advance(task)
    except SpecError as exc:  # torchrun: raised on every rank below, after the gather
        error = exc
    _gather(result, list(cases), error)
    result.seconds = time.perf_counter() - start
    return result


def ensemble_member(exp: Experiment, folder: str | Path) -> tuple[Experiment, list[Path]]:
    """One entry of ``exp.ensemble``: the run's spec (its ``config.yaml``; a cross-validated
    run's from its folds) and checkpoints (every trained fold, or fold k when ``exp`` is one
    fold, as ``--fold k`` makes it).

    Raises:
        CheckpointError: no such run, no trained model in it, or fold k not trained.
        SpecError: the member predicts other labels (classes, regions, multilabel) than ``exp``.
    """
    from segcli.config import load
    from segcli.errors import CheckpointError
    from segcli.io.checkpoint import run_checkpoint

    folder = Path(folder)
    fix = "train it first, or remove it from the spec's ensemble"
    if (folder / "config.yaml").is_file():
        member = load(folder / "config.yaml")
        if member.data.folds is None or member.data.fold is not None:  # a single run
            return _same_outputs(exp, member, folder), [run_checkpoint(folder, fix)[0]]
    folds = sorted(folder.glob("fold_*/config.yaml"))
    if not folds:
        raise CheckpointError(f"ensemble member {folder}: not a run folder (no config.yaml); {fix}")
    member = load(folds[0])
    member = member.model_copy(update={"data": member.data.model_copy(update={"fold": None})})
    _same_outputs(exp, member, folder)
    wanted = [exp.data.fold] if exp.data.fold is not None else range(member.data.folds or 0)
    paths = []
    for k in wanted:
        run = folder / f"fold_{k}"
        if exp.data.fold is not None or (run / "config.yaml").is_file():
            paths.append(run_checkpoint(run, fix)[0])
    if not paths:
        raise CheckpointError(f"ensemble member {folder}: no trained fold; {fix}")
    return member, paths


def _same_outputs(exp: Experiment, member: Experiment, folder: Path) -> Experiment:
    """``member`` when its networks' outputs mean what ``exp``'s mean, else SpecError."""
    ours = (exp.model.num_classes, exp.multilabel, exp.region_values)
    theirs = (member.model.num_classes, member.multilabel, member.region_values)
    if ours != theirs:
        raise SpecError(
            f"ensemble member {folder}: its outputs (classes, multilabel, regions) {theirs} "
            f"differ from the spec's {ours}; an ensemble averages the same outputs"
        )
    return member


def _gather(result: PredictResult, order: list[str], error: SpecError | None) -> None:
    """Merge every rank's written / skipped / failed into ``result`` (case order); raise the
    first rank's error on all ranks.  One process: just raises ``error`` if any."""
    parts = distributed.all_gather_object((result.written, result.skipped, result.failed, error))
    distributed.raise_first([part[3] for part in parts])
    if len(parts) == 1:
        return
    index_of = {name: i for i, name in enumerate(order)}
    result.written = sorted((n for part in parts for n in part[0]), key=index_of.__getitem__)
    result.skipped = sorted((n for part in parts for n in part[1]), key=index_of.__getitem__)
    failed = [item for part in parts for item in part[2].items()]
    result.failed = dict(sorted(failed, key=lambda item: index_of[item[0]]))


def _unsafe_case_name(name: str, output_dir: Path) -> str | None:
    """Why ``name`` cannot name files in ``output_dir`` (None when it can).

    Output files are ``<output_dir>/<name>...``: a name with a path separator, or a name that
    would make a hidden file (``.``, ``..``), could write outside the folder or be overlooked.
    """
    seps = {"/", "\\", "\0", os.sep, os.altsep or "/"}
    folder = output_dir.resolve()
    target = Path(os.path.normpath(folder / f"{name}.nii.gz"))  # the file itself may be a link
    if not name or name.startswith(".") or any(sep in name for sep in seps):
        return (
            f"case name {name!r} cannot name an output file (it starts with '.' or holds a path "
            "separator); rename the input file"
        )
    if target.parent != folder:
        return f"case name {name!r} would write outside {output_dir}; rename the input file"
    return None


# --------------------------------------------------------------------------- one case


def predict_case(
    exp: Experiment,
    models: list[LoadedModel],
    files: tuple[Path, ...],
    label_path: Path,
    prob_path: Path | None,
    device: str,
) -> None:
    """Predict one case and write its label map (and probabilities); nothing is left on error.

    Raises:
        DataError: bad input files (see :func:`read_case`), wrong dimensionality, or a failed
            write; ``SegcliError`` for a network that cannot run sliding windows.
    """
    image, geometry = read_case(files, exp.model.in_channels)
    dims = exp.model.dims
    squeezed = False
    if image.ndim - 1 != dims:
        if dims == 2 and image.ndim == 4 and image.shape[1] == 1:
            image, squeezed = image[:, 0], True  # a 2-D slice stored as a 1-slice volume
        else:
            raise DataError(
                f"{files[0]}: the image is {image.ndim - 1}-D {tuple(image.shape[1:])} "
                f"but the model is {dims}-D (model.dims)"
            )
    grid = geometry
    if squeezed:  # resampling happens in the plane; the slice's own 2-D grid
        grid = make_geometry(image.shape[1:], geometry.spacing[1:])
    labels, probs = predict_volume(exp, models, image, device, grid, prob_path is not None)
    del image
    post = exp.inference.postprocess
    if post.largest_component or post.min_size > 0 or post.fill_holes:
        from segcli.postprocess import postprocess_labels

        labels = postprocess_labels(
            labels,
            largest_component=post.largest_component,
            min_size=post.min_size,
            fill_holes=post.fill_holes,
        )
    if squeezed:
        labels = labels[None]
        probs = None if probs is None else probs[:, None]
    if prob_path is not None and probs is not None:
        _write_npz(prob_path, probs.astype(np.float16, copy=False))
    try:
        write_image(label_path, labels, geometry)
    except BaseException:
        if prob_path is not None:
            prob_path.unlink(missing_ok=True)
        raise


def _write_npz(path: Path, probabilities: np.ndarray) -> None:
    """``np.savez_compressed`` to a temp file in the folder, then rename."""
    with atomic_open(path, "wb", what="the probabilities") as handle:
        np.savez_compressed(handle, probabilities=probabilities)
