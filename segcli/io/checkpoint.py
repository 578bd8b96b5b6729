"""Checkpoints: tensors and plain data only, written atomically, loaded with weights_only=True.

>>> save_checkpoint("run/checkpoint_last.pt", {"model": model.state_dict(), "epoch": 3})
>>> state = load_checkpoint("run/checkpoint_last.pt")
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from segcli.atomic import atomic_open
from segcli.errors import CheckpointError

__all__ = ["FORMAT_VERSION", "load_checkpoint", "save_checkpoint"]

#: Bumped when the checkpoint layout changes incompatibly.
FORMAT_VERSION = 1


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
