"""``train.init_from``: start a run from another run's weights (fine-tuning).

    >>> from segcli.engine.init_from import load_initial_weights
    >>> report = load_initial_weights(model, exp)   # a new run only, never on --resume
    >>> report.path, report.reinitialised
    (PosixPath('runs/hippocampus/checkpoint_best.pt'), [])

The network's state (parameters and buffers) is compared with the checkpoint's in module order:
every tensor must be in the checkpoint with the same shape, except the output layer(s) — the
tensors whose shape follows the number of classes, found by building the network once more
(on the meta device) with one class more; with deep supervision that is every head.  A
checkpoint trained for another number of classes cannot fill those: they keep the network's
fresh initialisation and the report says so.  Anything else that does not fit (another
architecture, width or depth) is a :class:`~segcli.errors.CheckpointError` naming the checkpoint
and the first layer in module order that does not fit.

The learning-rate warm-up a fine-tuning run gets by default is the spec's business
(:func:`segcli.config.schema.fine_tune_warmup_epochs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segcli.config import Experiment
from segcli.errors import CheckpointError
from segcli.io.checkpoint import Checkpoint, run_checkpoint, spec_differences

__all__ = ["InitReport", "load_initial_weights", "output_tensors", "resolve_init_from"]


@dataclass(frozen=True)
class InitReport:
    """What :func:`load_initial_weights` did.

    Attributes:
        path: the checkpoint file the weights came from.
        loaded: number of tensors (parameters and buffers) copied from it.
        reinitialised: output layers (module names, module order) left at their fresh
            initialisation because the checkpoint was trained for another number of classes.
        checkpoint_classes: the class count the checkpoint was trained for (None: unknown).
        notes: remarks about the choice of file (a run folder without checkpoint_best.pt).
    """

    path: Path
    loaded: int
    reinitialised: list[str] = field(default_factory=list)
    checkpoint_classes: int | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self, classes: int) -> str:
        """One console line: where the weights came from and what was re-initialised."""
        line = f"initialised from {self.path}: {self.loaded} tensors loaded"
        if self.reinitialised:
            trained = (
                f"{self.checkpoint_classes} classes"
                if self.checkpoint_classes is not None
                else "another number of classes"
            )
            line += (
                f"; the checkpoint was trained for {trained} and this network has {classes}: "
                f"output layer(s) {', '.join(self.reinitialised)} re-initialised"
            )
        return line


def resolve_init_from(value: str | Path) -> tuple[Path, list[str]]:
    """The checkpoint file ``train.init_from`` names: the file itself, or a run folder's
    ``checkpoint_best.pt`` (else ``checkpoint_last.pt``, with a note).

    Raises:
        CheckpointError: neither a file nor a run folder holding a checkpoint.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        return run_checkpoint(path, "train.init_from needs a trained run folder or a .pt file")
    if not path.is_file():
        raise CheckpointError(
            f"{path}: train.init_from names no checkpoint file or run folder (not found); "
            "give a checkpoint_best.pt / checkpoint_last.pt or the run folder holding one"
        )
    return path, []


def output_tensors(model_spec: Any) -> set[str]:
    """State-dict keys of the network ``model_spec`` describes whose shape follows the number
    of classes: the output layer(s), every head with deep supervision.

    Found by building the network on the meta device (no memory, no random numbers drawn)
    with one class more and comparing shapes.
    """
    from segcli.models import build

    probe = model_spec.model_copy(update={"classes": model_spec.num_classes + 1, "labels": None})
    with torch.device("meta"):
        ours, more = build(model_spec).state_dict(), build(probe).state_dict()
    return {k for k, v in ours.items() if k in more and tuple(more[k].shape) != tuple(v.shape)}


def load_initial_weights(model: nn.Module, exp: Experiment) -> InitReport:
    """Copy the weights of ``exp.train.init_from`` into ``model`` (freshly built from
    ``exp.model``); output layers that a different class count cannot fill stay as built.

    Raises:
        CheckpointError: the checkpoint is missing, unreadable or untrusted (loaded with
            ``weights_only=True``), or a layer other than the output layer(s) does not fit.
    """
    assert exp.train.init_from is not None
    path, notes = resolve_init_from(exp.train.init_from)
    ckpt = Checkpoint.load(path, map_location="cpu")
    outputs = output_tensors(exp.model)
    theirs = {k: v for k, v in ckpt.model.items() if isinstance(v, torch.Tensor)}
    ours = model.state_dict()
    hint = _model_hint(ckpt, exp)
    reinit: list[str] = []
    for key, tensor in ours.items():
        layer, _, name = key.rpartition(".")
        where = f"layer '{layer}'" if layer else f"tensor '{key}'"
        if key not in theirs:
            raise CheckpointError(
                f"{path}: cannot initialise from it: {where} ({name} {_shape(tensor)}) is not in "
                f"the checkpoint{hint}; {_FIX}"
            )
        if theirs[key].shape == tensor.shape:
            continue
        if key in outputs:  # trained for another number of classes
            if layer not in reinit:
                reinit.append(layer)
            continue
        raise CheckpointError(
            f"{path}: cannot initialise from it: {where} does not fit ({name}: checkpoint "
            f"{_shape(theirs[key])}, network {_shape(tensor)}){hint}; {_FIX}"
        )
    extra = [k for k in theirs if k not in ours]
    if extra:
        layer = extra[0].rpartition(".")[0] or extra[0]
        raise CheckpointError(
            f"{path}: cannot initialise from it: the checkpoint's layer '{layer}' "
            f"({_shape(theirs[extra[0]])}) is not in this network{hint}; {_FIX}"
        )
    skip = {k for k in ours if k.rpartition(".")[0] in reinit}
    state = {k: v for k, v in theirs.items() if k not in skip}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == skip and not unexpected, (missing, unexpected)
    return InitReport(path, len(state), reinit, _stored_classes(ckpt), notes)


_FIX = (
    "train.init_from needs a checkpoint of the same architecture (model section), where only "
    "the number of output classes may differ"
)


def _shape(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def _stored_classes(ckpt: Checkpoint) -> int | None:
    model = ckpt.spec.get("model") if isinstance(ckpt.spec, dict) else None
    classes = model.get("classes") if isinstance(model, dict) else None
    return int(classes) if isinstance(classes, int) else None


def _model_hint(ckpt: Checkpoint, exp: Experiment) -> str:
    """`` (the model sections differ: model.filters: checkpoint 16, spec 8)``, or empty."""
    if not isinstance(ckpt.spec, dict):
        return ""
    ignore = ("model.classes", "model.labels")
    diffs = [
        d
        for d in spec_differences(ckpt.spec, exp.model_dump(mode="json"), ["model"])
        if not d.startswith(ignore)
    ]
    if not diffs:
        return ""
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return f" (the model sections differ: {'; '.join(diffs[:3])}{more})"
