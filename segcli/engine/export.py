"""``segcli export``: a trained network as one self-contained TorchScript or ONNX file.

    >>> from segcli.config import load
    >>> from segcli.engine.export import export_model
    >>> result = export_model(load("exp.yaml"), "model.pt", format="torchscript")
    >>> result.path, result.spec_path, result.max_abs_difference    # model.pt, model.pt.yaml

The file holds the network in eval mode (deep supervision off): input ``(B, in_channels,
*spatial)`` float32, *already normalised and resampled* as ``segcli predict`` does, output
``(B, classes, *spatial)`` logits.  Beside it, ``FILE.yaml`` is the resolved spec (with
``data.spacing: auto`` replaced by the spacing the checkpoint was trained at), and the file
itself carries the same as JSON — spec, ``normalization_stats`` and ``target_spacing`` — in
TorchScript's extra file ``segcli.json`` or the ONNX model's ``metadata_props`` key
``segcli``, so the model can be used without segcli.

* **torchscript**: ``torch.jit.trace`` on an input of ``inference.patch_size``; loads with
  ``torch.jit.load(FILE)``, no segcli import needed.
* **onnx** (needs the ``export`` extra: ``pip install 'segcli[export]'``): ``torch.onnx.export``
  with dynamic batch and spatial axes (input ``image``, output ``logits``): the ``torch.export``
  based exporter first, the TorchScript-based one if that fails.

Every export is checked before it is moved into place: the file is loaded back (TorchScript;
ONNX with onnxruntime when installed) and must reproduce the checkpoint's logits on a random
input of the patch size and, where the network accepts it, of a second, larger size.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segcli import __version__
from segcli.atomic import atomic_path
from segcli.config import Experiment, dump
from segcli.errors import SegcliError, SpecError

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_model", "read_metadata"]

EXPORT_FORMATS = ("torchscript", "onnx")

#: largest |exported − checkpoint| logit difference accepted, relative to the logits' scale
_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the model file.
        spec_path: the resolved spec beside it (``FILE.yaml``).
        format: ``torchscript`` or ``onnx``.
        checkpoint: the checkpoint exported.
        max_abs_difference: largest |exported − checkpoint| logit over the check inputs
            (NaN when the file could not be run: ONNX without onnxruntime).
        notes: remarks (which ONNX exporter was used, what was not verified).
    """

    path: Path
    spec_path: Path
    format: str
    checkpoint: Path
    max_abs_difference: float
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- entry point


def export_model(
    exp: Experiment,
    output: str | Path,
    format: str = "torchscript",
    checkpoint: str | Path | None = None,
) -> ExportResult:
    """Export ``checkpoint`` (default: the run folder's ``checkpoint_best.pt``) to ``output``.

    Args:
        exp: the experiment the checkpoint was trained with.
        output: the model file to write (e.g. ``model.pt`` or ``model.onnx``); the spec goes
            to ``output`` + ``.yaml``.  Both are written atomically.
        format: ``torchscript`` or ``onnx``.
        checkpoint: the checkpoint file; None = ``<output>/<name>/checkpoint_best.pt`` (or
            ``checkpoint_last.pt``), as ``segcli predict`` picks it.

    Returns:
        An :class:`ExportResult`.

    Raises:
        SpecError: unknown format.
        CheckpointError: missing or mismatched checkpoint (see ``segcli predict``).
        SegcliError: ONNX requested without the ``onnx`` package, the export failed, or the
            exported file does not reproduce the checkpoint's output.
    """
    from segcli.inference.ensemble import load_models
    from segcli.io.checkpoint import resolve_checkpoints

    if format not in EXPORT_FORMATS:
        raise SpecError(f"--format: unknown format {format!r}; choose one of torchscript, onnx")
    output = Path(output)
    if output.is_dir():
        raise SegcliError(f"{output}: is a folder; --output names the model file to write")
    paths, notes = resolve_checkpoints(exp, [checkpoint] if checkpoint is not None else None)
    loaded = load_models(exp, paths[:1], "cpu")[0]
    network = loaded.network.float().eval()
    metadata = _metadata(exp, loaded.stats, loaded.spacing)
    inputs = _check_inputs(exp)
    spec_path = Path(f"{output}.yaml")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegcliError(f"{output.parent}: cannot create the folder ({exc.strerror})") from None
    # both files are renamed into place only once both are written and the model is checked:
    # the model first, then its spec
    with (
        atomic_path(spec_path, error=SegcliError, what="the spec") as spec_tmp,
        atomic_path(output, error=SegcliError, what="the model") as tmp,
    ):
        try:
            if format == "torchscript":
                difference = _export_torchscript(network, inputs, metadata, tmp)
            else:
                difference, exporter_notes = _export_onnx(network, inputs, metadata, tmp)
                notes.extend(exporter_notes)
        finally:
            Path(f"{tmp}.data").unlink(missing_ok=True)  # ONNX external weights, if any
        spec_tmp.write_text(_resolved_spec(exp, loaded.spacing), encoding="utf-8")
    return ExportResult(output, spec_path, format, paths[0], difference, notes)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata an exported file carries (spec, normalization_stats, target_spacing).

    Raises:
        SegcliError: the file is not a segcli export.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            text = next(p.value for p in model.metadata_props if p.key == "segcli")
        else:
            extra = {"segcli.json": ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            text = extra["segcli.json"]
        return json.loads(text)
    except (ImportError, StopIteration, RuntimeError, ValueError, OSError) as exc:
        raise SegcliError(f"{path}: not a model file written by segcli export ({exc})") from None


# --------------------------------------------------------------------------- pieces


def _metadata(
    exp: Experiment, stats: dict[str, list[float]] | None, spacing: tuple[float, ...] | None
) -> str:
    return json.dumps(
        {
            "segcli_version": __version__,
            "spec": exp.model_dump(mode="json"),
            "normalization_stats": stats,
            "target_spacing": list(spacing) if spacing is not None else None,
            "input": "image (B, in_channels, *spatial) float32, normalised and resampled",
            "output": "logits (B, classes, *spatial)",
        }
    )


def _resolved_spec(exp: Experiment, spacing: tuple[float, ...] | None) -> str:
    if exp.data.spacing == "auto" and spacing is not None:
        data = exp.data.model_copy(update={"spacing": list(spacing)})
        exp = exp.model_copy(update={"data": data})
    return dump(exp)


def _check_inputs(exp: Experiment) -> list[torch.Tensor]:
    """Random inputs: one patch, and (when the network takes it) two of a larger size."""
    from segcli.models import check_input_size, size_multiple

    patch = list(exp.inference.patch_size)
    generator = torch.Generator().manual_seed(0)
    shape = (1, exp.model.in_channels)
    inputs = [torch.randn(*shape, *patch, generator=generator)]
    larger = [p + m for p, m in zip(patch, size_multiple(exp.model), strict=True)]
    try:
        check_input_size(exp.model, larger)
    except SpecError:
        return inputs
    inputs.append(torch.randn(2, exp.model.in_channels, *larger, generator=generator))
    return inputs


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Tracing and exporting warn (deprecations, trace-time constants) and print; silence it.

    The check against the checkpoint's output is what tells whether the file is right.
    """
    # torch.export logs failed attempts (whole graphs) and missing optional packages; the
    # exporter that failed is named in the error or the notes instead
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _reference(network: nn.Module, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        return [network(x).numpy() for x in inputs]


def _compare(
    run: Callable[[torch.Tensor], np.ndarray],
    inputs: list[torch.Tensor],
    expected: list[np.ndarray],
) -> float:
    worst = 0.0
    for x, want in zip(inputs, expected, strict=True):
        got = run(x)
        if got.shape != want.shape:
            raise SegcliError(
                f"the exported model gives shape {got.shape} for input {tuple(x.shape)} "
                f"but the checkpoint gives {want.shape}"
            )
        difference = float(np.max(np.abs(got - want))) if want.size else 0.0
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        if not difference <= _TOLERANCE * scale:
            raise SegcliError(
                f"the exported model differs from the checkpoint by {difference:.3g} on an "
                f"input of size {tuple(x.shape)}"
            )
        worst = max(worst, difference)
    return worst


def _export_torchscript(
    network: nn.Module, inputs: list[torch.Tensor], metadata: str, tmp: Path
) -> float:
    expected = _reference(network, inputs)
    try:
        with _quiet_export(), torch.no_grad():
            traced = torch.jit.trace(network, inputs[0], check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={"segcli.json": metadata})
            loaded = torch.jit.load(str(tmp), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 — tracing fails in many ways; report, do not crash
        raise SegcliError(f"TorchScript export failed: {type(exc).__name__}: {exc}") from None

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    return _compare(run, inputs, expected)


def _export_onnx(
    network: nn.Module, inputs: list[torch.Tensor], metadata: str, tmp: Path
) -> tuple[float, list[str]]:
    try:
        import onnx
    except ImportError:
        raise SegcliError(
            "ONNX export needs the onnx package: pip install 'segcli[export]' "
            "(onnx, onnxruntime, onnxscript), or export --format torchscript"
        ) from None
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    expected = _reference(network, inputs)
    spatial = inputs[0].ndim - 2
    failures: list[str] = []
    for exporter in ("dynamo", "torchscript"):
        try:
            with _quiet_export():
                _onnx_export(network, inputs[0], spatial, tmp, dynamo=exporter == "dynamo")
            model = onnx.load(str(tmp))
            entry = model.metadata_props.add()
            entry.key, entry.value = "segcli", metadata
            onnx.save(model, str(tmp))
        except Exception as exc:  # noqa: BLE001 — try the other exporter, then report both
            failures.append(f"{exporter} exporter: {type(exc).__name__}: {_first_line(exc)}")
            continue
        notes = [f"ONNX written by torch's {exporter} exporter"]
        if onnxruntime is None:
            notes.append("not checked: onnxruntime is not installed")
            return float("nan"), notes
        try:
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            difference = _compare(partial(_run_onnx, session), inputs, expected)
        except Exception as exc:  # noqa: BLE001 — onnxruntime rejects some graphs; next one
            failures.append(f"{exporter} exporter: {type(exc).__name__}: {_first_line(exc)}")
            continue
        return difference, notes
    raise SegcliError("ONNX export failed: " + "; ".join(failures))


def _run_onnx(session: Any, x: torch.Tensor) -> np.ndarray:
    return session.run(None, {"image": x.numpy()})[0]


def _onnx_export(
    network: nn.Module, example: torch.Tensor, spatial: int, path: Path, dynamo: bool
) -> None:
    names = {0: "batch", **{axis + 2: f"size{axis}" for axis in range(spatial)}}
    if dynamo:
        dims = {0: torch.export.Dim("batch")}
        dims.update({axis + 2: torch.export.Dim(f"size{axis}") for axis in range(spatial)})
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=(dims,),
            dynamo=True,
            external_data=False,  # one self-contained file
            verbose=False,
        )
    else:
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": names, "logits": names},
            dynamo=False,
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
