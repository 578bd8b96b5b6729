"""Checkpoints: a typed record, written atomically, loaded with ``weights_only=True``.

    >>> ckpt = Checkpoint(model=network.state_dict(), spec=exp.model_dump(mode="json"), epoch=3)
    >>> ckpt.save("runs/x/checkpoint_last.pt")
    >>> ckpt = Checkpoint.load("runs/x/checkpoint_last.pt")
    >>> check_compatible(ckpt, exp, "runs/x/checkpoint_last.pt")   # predict / export
    >>> check_compatible(ckpt, exp, "runs/x/checkpoint_last.pt", resume=True)

On disk a checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (the keys are
the fields of :class:`Checkpoint` plus ``format_version``), so ``torch.load(path,
weights_only=True)`` reads it without segcli and files written before the record existed load
unchanged.  :func:`save_checkpoint` / :func:`load_checkpoint` are that dict layer.

:func:`check_compatible` is the one spec check: train's ``--resume``, ``segcli predict`` and
``segcli export`` all ask it whether a checkpoint's weights mean what the current spec says.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segcli.atomic import atomic_open
from segcli.errors import CheckpointError, SpecError

if TYPE_CHECKING:
    from segcli.config import Experiment

__all__ = [
    "FORMAT_VERSION",
    "RESUME_KEYS",
    "Checkpoint",
    "check_compatible",
    "load_checkpoint",
    "resolve_checkpoints",
    "run_checkpoint",
    "save_checkpoint",
    "spec_differences",
]

#: Bumped when the checkpoint layout changes incompatibly.
FORMAT_VERSION = 1

#: Spec sections a resumed run must share with the run it continues (epochs etc. may change).
RESUME_KEYS = ("model", "loss", "data", "multilabel", "regions", "seed")

#: Spec keys a checkpoint must agree on besides ``model``: they change what the weights mean.
_MEANING_KEYS = ("multilabel", "regions", "data.normalization")

_HINT = "use the spec the checkpoint was trained with (its run folder's config.yaml)"


@dataclass(frozen=True)
class Checkpoint:
    """What ``segcli train`` saves after an epoch; only ``model`` is required to predict.

    Attributes:
        model: the network's ``state_dict`` (unwrapped from DDP / torch.compile).
        spec: the experiment spec as JSON-able dict (``Experiment.model_dump(mode="json")``).
        epoch: the last complete epoch, 0-based.
        best_dice, best_epoch: best mean validation Dice so far and its epoch (-1: none yet).
        optimizer, scheduler, scaler: their ``state_dict`` (scaler ``{}`` when unused).
        rng: Python / NumPy / torch RNG states (:func:`segcli.engine.runtime.rng_state`).
        normalization_stats: ``ct_auto``'s dataset statistics, None otherwise.
        target_spacing: the spacing (mm, array axis order) the data was resampled to, None
            when trained on the images' own grids.
        segcli_version: the version that wrote it.
        log: the run's log.csv rows up to ``epoch`` (log.csv may lag behind after a kill).
    """

    model: dict[str, Any]
    spec: dict[str, Any] | None = None
    epoch: int = 0
    best_dice: float = -math.inf
    best_epoch: int = -1
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] | None = None
    normalization_stats: dict[str, Any] | None = None
    target_spacing: list[float] | None = None
    segcli_version: str | None = None
    log: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The on-disk layout (without ``format_version``, which :func:`save_checkpoint` adds)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (temp file + rename); returns ``path``."""
        return save_checkpoint(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read ``path`` (see :func:`load_checkpoint`); unknown keys are ignored.

        Raises:
            CheckpointError: missing, corrupt, untrusted or foreign file.
        """
        state = load_checkpoint(path, map_location)
        known = {k: state[k] for k in cls.__dataclass_fields__ if state.get(k) is not None}
        if not isinstance(known.get("log"), list):
            known.pop("log", None)
        for key in ("optimizer", "scheduler", "scaler"):  # tolerate hand-written files
            if not isinstance(known.get(key), dict):
                known.pop(key, None)
        return cls(**known)

    @property
    def trained_spacing(self) -> tuple[float, ...] | None:
        """The spacing the weights were trained at: ``target_spacing``, or for files written
        before it was stored, an explicit ``data.spacing`` list of the stored spec."""
        stored: Any = self.target_spacing
        if (
            stored is None
            and isinstance(self.spec, dict)
            and isinstance(self.spec.get("data"), dict)
        ):
            listed = self.spec["data"].get("spacing")
            stored = listed if isinstance(listed, list) else None
        return tuple(float(v) for v in stored) if stored is not None else None

    @property
    def trained_with_crop(self) -> bool:
        """Whether training cropped its cases to the non-zero region: the stored spec's
        ``data.crop_nonzero``; a spec written before the key existed trained on whole images."""
        data = self.spec.get("data") if isinstance(self.spec, dict) else None
        return bool(data.get("crop_nonzero", False)) if isinstance(data, dict) else False


# --------------------------------------------------------------------------- the dict layer


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically to ``path``."""
    path = Path(path)
    state = {"format_version": FORMAT_VERSION, **state}
    with atomic_open(path, "wb", error=CheckpointError, what="the checkpoint") as handle:
        torch.save(state, handle)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a file whose pickle would run code is refused.

    Raises:
        CheckpointError: missing, corrupt, untrusted, or from an incompatible segcli version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols first
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text suggests weights_only=False, the very thing not to do: keep only
        # the line that names the refused object
        what = [line for line in str(exc).splitlines() if "GLOBAL" in line]
        detail = f" ({what[0].strip().rstrip('.')})" if what else ""
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors and plain data, and "
            f"loading it could run code{detail}; use a checkpoint written by segcli train, and "
            "never load checkpoints from sources you do not trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt: {reason}); copy it again "
            "or use another checkpoint of the run"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a segcli checkpoint (no model weights inside)")
    version = state.get("format_version")
    if version is None:
        raise CheckpointError(
            f"{path}: has no format_version, so it was not written by segcli train (which "
            f"writes format {FORMAT_VERSION}); train with segcli or pass a segcli checkpoint"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is not supported by this segcli "
            f"(expects {FORMAT_VERSION}); retrain or use the segcli version that wrote it"
        )
    return state


# --------------------------------------------------------------------------- which file


def resolve_checkpoints(
    exp: Experiment, checkpoints: list[str | Path] | list[Path] | None
) -> tuple[list[Path], list[str]]:
    """The checkpoint files to use and notes about the choice.

    Default: the run folder's ``checkpoint_best.pt``, else ``checkpoint_last.pt`` (with a note);
    for a cross-validated spec (``data.folds`` set, no ``data.fold``) each trained fold's, an
    ensemble averaged by predict.

    Raises:
        CheckpointError: a given file does not exist, or the run folder has no checkpoint.
    """
    if checkpoints:
        paths = [Path(p) for p in checkpoints]
        for p in paths:
            if not p.is_file():
                raise CheckpointError(f"{p}: checkpoint not found")
        return paths, []
    if exp.data.folds is not None and exp.data.fold is None:
        return _fold_checkpoints(exp)
    path, notes = run_checkpoint(
        exp.run_folder, "train first (segcli train) or pass --checkpoint PATH"
    )
    return [path], notes


def run_checkpoint(run: str | Path, fix: str) -> tuple[Path, list[str]]:
    """The checkpoint a run folder stands for: ``checkpoint_best.pt``, else
    ``checkpoint_last.pt`` (with a note saying so).

    Raises:
        CheckpointError: the folder holds neither; the message ends with ``fix``.
    """
    run = Path(run)
    best, last = run / "checkpoint_best.pt", run / "checkpoint_last.pt"
    if best.is_file():
        return best, []
    if last.is_file():
        return last, [f"{run}: no checkpoint_best.pt (no validation yet?); using {last.name}"]
    raise CheckpointError(f"{run}: no checkpoint_best.pt or checkpoint_last.pt; {fix}")


def _fold_checkpoints(exp: Experiment) -> tuple[list[Path], list[str]]:
    """A cross-validated run: every trained fold's best checkpoint (an ensemble)."""
    assert exp.data.folds is not None
    paths, missing = [], []
    for k in range(exp.data.folds):
        fold = exp.cv_folder / f"fold_{k}"
        found = [
            p for p in (fold / "checkpoint_best.pt", fold / "checkpoint_last.pt") if p.is_file()
        ]
        if found:
            paths.append(found[0])
        else:
            missing.append(k)
    if not paths:
        raise CheckpointError(
            f"{exp.cv_folder}: no trained fold (fold_0 ... fold_{exp.data.folds - 1}); train "
            "them first (segcli train EXP.yaml --fold all) or pass --fold k / --checkpoint PATH"
        )
    notes = [f"ensemble of {len(paths)} fold model(s) of {exp.cv_folder} (--fold k for one)"]
    if missing:
        notes.append(
            f"fold(s) {', '.join(map(str, missing))} not trained yet: left out of the ensemble"
        )
    return paths, notes


# --------------------------------------------------------------------------- compatibility


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def spec_differences(saved: dict[str, Any], current: dict[str, Any], keys: Any) -> list[str]:
    """Dotted keys under ``keys`` where two JSON spec dicts disagree, as readable lines.

    Args:
        saved: the checkpoint's spec (``Checkpoint.spec``).
        current: ``Experiment.model_dump(mode="json")`` of the spec in use.
        keys: dotted section names to compare (``"model"``, ``"data.normalization"`` ...).

    Returns:
        ``"model.filters: checkpoint 16, spec 32"`` lines, in ``keys`` order (sorted within).
    """
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


def check_compatible(
    ckpt: Checkpoint, exp: Experiment, path: str | Path, resume: bool = False
) -> None:
    """Raise unless ``ckpt`` can be used with ``exp``.

    ``resume=False`` (predict, export): the weights must mean what ``exp`` says — same
    ``model``, ``multilabel``, ``regions``, ``data.normalization`` (and ``data.window`` for ``ct``), the
    dataset statistics stored for ``ct_auto``, and the training spacing matching
    ``data.spacing`` (``auto`` takes the stored one).  ``resume=True`` (train ``--resume``): the
    stored spec must be valid and its ``model``, ``loss``, ``data``, ``multilabel``, ``regions`` and ``seed``
    sections equal to ``exp``'s (more epochs are fine).

    Raises:
        CheckpointError: naming ``path``, the differing keys and the fix.
    """
    from segcli.config import from_dict

    current = exp.model_dump(mode="json")
    saved = ckpt.spec
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise CheckpointError(f"{path}: has no experiment spec inside; not written by segcli train")
    if resume:
        try:
            old = from_dict(saved)
        except SpecError as exc:
            raise CheckpointError(
                f"{path}: the spec stored in the checkpoint is invalid: {exc}"
            ) from None
        for key in RESUME_KEYS:
            if spec_differences(old.model_dump(mode="json"), current, [key]):
                raise CheckpointError(
                    f"{path}: cannot resume: the spec's '{key}' section differs from the one the "
                    "run was started with; resume with the run's config.yaml"
                )
        return
    keys = ["model", *_MEANING_KEYS]
    if exp.data.normalization == "ct":
        keys.append("data.window")
    diffs = spec_differences(saved, current, keys)
    if diffs:
        raise CheckpointError(
            f"{path}: trained with a different model than the spec describes: "
            + "; ".join(diffs)
            + ". Use the spec the checkpoint was trained with (its run folder's config.yaml)"
        )
    if exp.data.normalization == "ct_auto" and not ckpt.normalization_stats:
        raise CheckpointError(
            f"{path}: data.normalization is ct_auto but the checkpoint holds no "
            "normalization_stats; retrain with this segcli version"
        )
    _check_spacing(ckpt, exp, path)


def _check_spacing(ckpt: Checkpoint, exp: Experiment, path: str | Path) -> None:
    """The spacing the checkpoint was trained at against ``exp.data.spacing``."""
    trained, wanted = ckpt.trained_spacing, exp.data.spacing
    if wanted is None:
        if trained is not None:
            raise CheckpointError(
                f"{path}: trained on images resampled to {list(trained)} mm but the spec's "
                f"data.spacing is null; {_HINT}"
            )
        return
    if trained is None:
        raise CheckpointError(
            f"{path}: data.spacing is {wanted} but the checkpoint holds no target_spacing "
            f"(trained on the images' own grids, or by an older segcli); {_HINT}"
        )
    if wanted != "auto" and not np.allclose(wanted, trained, rtol=1e-6, atol=0):
        raise CheckpointError(
            f"{path}: trained at spacing {list(trained)} mm but the spec's data.spacing is "
            f"{list(wanted)}; {_HINT}"
        )
