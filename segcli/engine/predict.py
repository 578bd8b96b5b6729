"""``segcli predict``: images in, one label map per case out, on the input's exact geometry.

    >>> from segcli.config import load
    >>> from segcli.engine.predict import predict_cases
    >>> result = predict_cases(load("exp.yaml"), "data/imagesTs", "pred", device="cpu")
    >>> result.written, result.skipped, result.failed
    (['case_000', 'case_001'], [], {})

Per case: read every channel (``<case>_0000``, ``_0001`` ... grouped by
:func:`segcli.io.dataset.group_images`), check they share one grid and that their number is
``model.in_channels``, normalise exactly as training does (``data.normalization``, with the
dataset statistics stored in the checkpoint for ``ct_auto``), resample to the spacing the
checkpoint was trained at (``data.spacing``; the checkpoint's ``target_spacing``), run
:func:`segcli.inference.sliding_window` with the spec's ``inference`` settings, resample the
probabilities linearly back onto the input grid (several checkpoints: probabilities averaged
there), take the argmax, apply ``inference.postprocess``, then write ``<case>.nii.gz``
(channel suffix dropped) with the first channel's size, spacing, origin and direction.  ``probabilities=True`` also
writes ``<case>_probabilities.npz`` (key ``probabilities``: float16 ``(classes, *spatial)``).

Labels: softmax models write the argmax class.  Multilabel models (``multilabel: true``,
sigmoid per label) write one label map where voxel value ``k + 1`` means channel ``k`` has
probability > 0.5 and, where several do, the highest such ``k`` wins (later labels are drawn
on top, as in training's validation); the probabilities file keeps every channel.

Every file is written atomically (temp file + rename), the label map last: a case whose label
map exists is done and is skipped unless ``overwrite``; a case that fails leaves no file of its
own and is reported in :attr:`PredictResult.failed` while the other cases go on.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segcli.atomic import atomic_open
from segcli.config import Experiment
from segcli.data.preprocessing import normalize
from segcli.engine import distributed
from segcli.engine.runtime import check_writable_folder, info, progress_bar, resolve_device
from segcli.errors import CheckpointError, DataError, SegcliError, SpecError
from segcli.io.checkpoint import load_checkpoint
from segcli.io.dataset import group_images, list_image_files
from segcli.io.images import (
    IMAGE_SUFFIXES,
    ImageGeometry,
    check_same_grid,
    make_geometry,
    read_image,
    strip_suffix,
    write_image,
)
from segcli.labels import decode_probabilities

__all__ = ["LoadedModel", "PredictResult", "find_inputs", "load_models", "predict_cases"]

#: Spec keys a checkpoint must agree on besides ``model``: they change what the weights mean.
_MEANING_KEYS = ("multilabel", "regions", "data.normalization")

_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")


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


@dataclass
class LoadedModel:
    """A network with its weights loaded and the preprocessing it was trained with.

    Attributes:
        spacing: the target spacing (mm, array axis order) of its training data, None when it
            was trained on the images' own grids.
    """

    path: Path
    network: nn.Module
    stats: dict[str, list[float]] | None
    spacing: tuple[float, ...] | None = None


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
    check_input_size(exp.model, exp.inference.patch_size or [], key="inference.patch_size")
    cases = find_inputs(input)
    paths, notes = resolve_checkpoints(exp, checkpoints)
    for note in notes:
        info(note)
    device = resolve_device(device)
    models = load_models(exp, paths, device)
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


# --------------------------------------------------------------------------- inputs


def find_inputs(input: str | Path) -> dict[str, tuple[Path, ...]]:
    """Cases to predict: case name → channel files in channel order.

    A file stands for its case: ``ct_007_0000.nii.gz`` brings along ``ct_007_0001.nii.gz`` ...
    from the same folder.  A folder is read like ``imagesTs/`` (files grouped by the
    ``_0000`` channel suffix, or one file per case without it).

    Raises:
        DataError: the path does not exist, holds no images (with a hint when it is a dataset
            root with ``imagesTs/``), or the channel files are inconsistent.
    """
    path = Path(input)
    if path.is_file():
        if not any(path.name.lower().endswith(s) for s in IMAGE_SUFFIXES):
            raise DataError(
                f"{path}: not an image file SimpleITK reads ({', '.join(IMAGE_SUFFIXES)})"
            )
        files = [path]
        channel = _CHANNEL.fullmatch(strip_suffix(path.name))
        if channel is not None:  # bring along the case's other channel files
            sibling = re.compile(re.escape(channel["case"]) + r"_\d{4}")
            files = [
                p for p in list_image_files(path.parent) if sibling.fullmatch(strip_suffix(p.name))
            ]
            if path not in files:  # a hidden file is not listed, but was asked for by name
                files = sorted([*files, path])
        return group_images(files, path.parent)
    if not path.is_dir():
        raise DataError(f"{path}: input not found (give an image file or a folder of images)")
    files = list_image_files(path)
    if not files:
        sub = [d for d in ("imagesTs", "imagesTr") if (path / d).is_dir()]
        if sub:
            raise DataError(
                f"{path}: no images directly in this folder; it looks like a dataset root — "
                f"point --input at the images folder, e.g. {path / sub[0]}"
            )
        raise DataError(f"{path}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return group_images(files, path)


# --------------------------------------------------------------------------- checkpoints


def resolve_checkpoints(
    exp: Experiment, checkpoints: list[str | Path] | list[Path] | None
) -> tuple[list[Path], list[str]]:
    """The checkpoint files to use and notes about the choice.

    Raises:
        CheckpointError: a given file does not exist, or the run folder has no checkpoint.
    """
    if checkpoints:
        paths = [Path(p) for p in checkpoints]
        for p in paths:
            if not p.is_file():
                raise CheckpointError(f"{p}: checkpoint not found")
        return paths, []
    run = Path(exp.output) / exp.name
    best, last = run / "checkpoint_best.pt", run / "checkpoint_last.pt"
    if best.is_file():
        return [best], []
    if last.is_file():
        return [last], [f"{run}: no checkpoint_best.pt (no validation yet?); using {last.name}"]
    raise CheckpointError(
        f"{run}: no checkpoint_best.pt or checkpoint_last.pt; train first "
        f"(segcli train) or pass --checkpoint PATH"
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _spec_differences(saved: dict[str, Any], exp: Experiment) -> list[str]:
    """Dotted keys where the checkpoint's spec and ``exp`` disagree on what the weights mean."""
    current = exp.model_dump(mode="json")
    keys = ["model"] + list(_MEANING_KEYS)
    if current["data"]["normalization"] == "ct":
        keys.append("data.window")
    diffs = []
    for key in keys:
        ours, theirs = current, saved
        for part in key.split("."):
            ours = ours.get(part) if isinstance(ours, dict) else None
            theirs = theirs.get(part) if isinstance(theirs, dict) else None
        a, b = _flatten(ours, f"{key}."), _flatten(theirs, f"{key}.")
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diffs.append(f"{k}: checkpoint {json.dumps(b.get(k))}, spec {json.dumps(a.get(k))}")
    return diffs


def load_models(exp: Experiment, paths: list[Path], device: str) -> list[LoadedModel]:
    """Build ``exp.model`` once per checkpoint, load the weights, move to ``device``, eval mode.

    Raises:
        CheckpointError: unreadable file, a checkpoint trained with another architecture,
            size or output meaning (the message lists the differing spec keys), or weights
            that do not fit the network.
    """
    from segcli.models import build

    models = []
    for path in paths:
        state = load_checkpoint(path, map_location="cpu")
        saved = state.get("spec")
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
            raise CheckpointError(
                f"{path}: has no experiment spec inside; not written by segcli train"
            )
        diffs = _spec_differences(saved, exp)
        if diffs:
            raise CheckpointError(
                f"{path}: trained with a different model than the spec describes: "
                + "; ".join(diffs)
                + ". Use the spec the checkpoint was trained with (its run folder's config.yaml)"
            )
        network = build(exp.model)
        try:
            network.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()
            raise CheckpointError(
                f"{path}: the weights do not fit model.arch '{exp.model.arch}': "
                f"{' '.join(first[:3])}"
            ) from None
        stats = state.get("normalization_stats")
        if exp.data.normalization == "ct_auto" and not stats:
            raise CheckpointError(
                f"{path}: data.normalization is ct_auto but the checkpoint holds no "
                "normalization_stats; retrain with this segcli version"
            )
        spacing = _checkpoint_spacing(path, state, saved, exp)
        models.append(LoadedModel(path, network.to(device).eval(), stats, spacing))
    return models


# --------------------------------------------------------------------------- one case


def _checkpoint_spacing(
    path: Path, state: dict[str, Any], saved: dict[str, Any], exp: Experiment
) -> tuple[float, ...] | None:
    """The spacing the checkpoint was trained at, checked against ``exp.data.spacing``.

    Raises:
        CheckpointError: the spec resamples and the checkpoint did not (or the other way
            round), the spacings differ, or ``auto`` with no ``target_spacing`` stored.
    """
    stored = state.get("target_spacing")
    if stored is None and isinstance(saved.get("data"), dict):
        listed = saved["data"].get("spacing")
        stored = listed if isinstance(listed, list) else None
    trained = tuple(float(v) for v in stored) if stored is not None else None
    wanted = exp.data.spacing
    hint = "use the spec the checkpoint was trained with (its run folder's config.yaml)"
    if wanted is None:
        if trained is not None:
            raise CheckpointError(
                f"{path}: trained on images resampled to {list(trained)} mm but the spec's "
                f"data.spacing is null; {hint}"
            )
        return None
    if trained is None:
        raise CheckpointError(
            f"{path}: data.spacing is {wanted} but the checkpoint holds no target_spacing "
            f"(trained on the images' own grids, or by an older segcli); {hint}"
        )
    if wanted != "auto" and not np.allclose(wanted, trained, rtol=1e-6, atol=0):
        raise CheckpointError(
            f"{path}: trained at spacing {list(trained)} mm but the spec's data.spacing is "
            f"{list(wanted)}; {hint}"
        )
    return trained


def read_case(files: tuple[Path, ...], in_channels: int) -> tuple[np.ndarray, ImageGeometry]:
    """Stack a case's channel files into ``(C, *spatial)`` float32 on the first file's grid.

    Raises:
        DataError: unreadable file, NaN/inf intensities, channels on different grids, or a
            channel count other than ``in_channels``.
    """
    if len(files) != in_channels:
        raise DataError(
            f"{files[0]}: the case has {len(files)} channel file(s) but the model takes "
            f"model.in_channels = {in_channels} (<case>_0000 ... <case>_{in_channels - 1:04d})"
        )
    arrays, geometry = [], None
    for path in files:
        array, geo = read_image(path)
        if geometry is None:
            geometry = geo
        else:
            check_same_grid(geo, geometry, f"{path} vs {files[0].name}")
        arrays.append(array)
    assert geometry is not None
    return np.stack(arrays), geometry


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
    probs = _ensemble(exp, models, image, device, grid)
    labels = decode_probabilities(probs, exp.region_values)  # regions: segcli.labels
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
        labels, probs = labels[None], probs[:, None]
    if prob_path is not None:
        _write_npz(prob_path, probs.astype(np.float16))
    try:
        write_image(label_path, labels, geometry)
    except BaseException:
        if prob_path is not None:
            prob_path.unlink(missing_ok=True)
        raise


def _ensemble(
    exp: Experiment,
    models: list[LoadedModel],
    image: np.ndarray,
    device: str,
    geometry: ImageGeometry | None = None,
) -> np.ndarray:
    """Mean probabilities of every model on the input grid, ``(classes, *spatial)`` float32.

    A model trained at a ``spacing`` sees the normalised image resampled to it
    (``data.resample_order``), and its probabilities are resampled linearly back onto
    ``geometry`` (the input's grid) before they are averaged.
    """
    from segcli.inference import sliding_window

    inf = exp.inference
    assert inf.patch_size is not None
    total: torch.Tensor | None = None
    normalized: dict[str, tuple[torch.Tensor, ImageGeometry | None]] = {}
    for model in models:
        key = json.dumps([model.stats, model.spacing], sort_keys=True)
        if key not in normalized:  # ensemble members usually share the preprocessing
            array = normalize(image, exp.data.normalization, exp.data.window, model.stats)
            grid = None
            if model.spacing is not None:
                array, grid = _resample_input(exp, array, geometry, model.spacing)
            normalized[key] = (torch.from_numpy(array), grid)
        network_input, grid = normalized[key]
        try:
            probs = sliding_window(
                model.network,
                network_input,
                patch_size=inf.patch_size,
                overlap=inf.overlap,
                blend=inf.blend,
                batch_size=inf.batch_size,
                tta=inf.tta,
                multilabel=exp.multilabel,
                device=device,
                pad_mode=inf.pad_mode,
                pad_value=inf.pad_value,
            ).cpu()
        except ValueError as exc:
            raise SpecError(f"model.arch '{exp.model.arch}': {exc}") from None
        except torch.cuda.OutOfMemoryError:
            raise DataError(
                f"out of GPU memory on an image of size {tuple(image.shape[1:])}; lower "
                "inference.batch_size or inference.patch_size, or use --device cpu"
            ) from None
        if grid is not None and geometry is not None:
            from segcli.data.resample import resample_image

            probs = torch.from_numpy(resample_image(probs.float().numpy(), grid, geometry, order=1))
        total = probs if total is None else total.add_(probs)
    assert total is not None
    if len(models) > 1:
        total.div_(len(models))
    return total.numpy()


def _resample_input(
    exp: Experiment,
    image: np.ndarray,
    geometry: ImageGeometry | None,
    spacing: tuple[float, ...],
) -> tuple[np.ndarray, ImageGeometry]:
    """The normalised ``(C, *spatial)`` image on its grid resampled to ``spacing``."""
    from segcli.data.resample import resample_image, resampled_geometry

    if geometry is None:
        geometry = make_geometry(image.shape[1:])
    if len(spacing) != geometry.dims:
        raise DataError(
            f"the image has {geometry.dims} axes {geometry.size} but the model was trained at "
            f"spacing {list(spacing)} ({len(spacing)} axes)"
        )
    grid = resampled_geometry(geometry, spacing)
    return resample_image(image, geometry, grid, exp.data.resample_order), grid


def _write_npz(path: Path, probabilities: np.ndarray) -> None:
    """``np.savez_compressed`` to a temp file in the folder, then rename."""
    with atomic_open(path, "wb", what="the probabilities") as handle:
        np.savez_compressed(handle, probabilities=probabilities)
