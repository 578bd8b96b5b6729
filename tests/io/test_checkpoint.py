"""The checkpoint record (segcli/io/checkpoint.py): layout, old files, the one compatibility check."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from segcli import __version__
from segcli.config import from_dict
from segcli.errors import CheckpointError
from segcli.io.checkpoint import FORMAT_VERSION, Checkpoint, check_compatible, load_checkpoint
from segcli.models import build


def _exp(**model):
    return from_dict(
        {
            "name": "ck",
            "data": {"synthetic": {"cases": 4}, "patch_size": [16, 16]},
            "model": {"arch": "cnn", "dims": 2, "filters": 4, "layers": 2, **model},
            "train": {"epochs": 3},
        }
    )


def _old_layout(exp) -> dict:
    """A checkpoint dict exactly as segcli train wrote it before the record existed."""
    network = build(exp.model)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    np_state = np.random.get_state()
    return {
        "format_version": FORMAT_VERSION,
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"last_epoch": 4, "_step_count": 5},
        "scaler": {},
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate(),
        },
        "epoch": 1,
        "best_dice": 0.25,
        "best_epoch": 0,
        "spec": exp.model_dump(mode="json"),
        "normalization_stats": None,
        "target_spacing": [1.5, 0.75],
        "segcli_version": __version__,
        "log": [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5}],
    }


def test_a_checkpoint_written_the_old_way_loads_into_the_record(tmp_path: Path) -> None:
    exp = _exp()
    state = _old_layout(exp)
    torch.save(state, tmp_path / "old.pt")
    ckpt = Checkpoint.load(tmp_path / "old.pt")
    assert ckpt.epoch == 1 and ckpt.best_dice == 0.25 and ckpt.best_epoch == 0
    assert ckpt.spec == state["spec"] and ckpt.log == state["log"]
    assert ckpt.trained_spacing == (1.5, 0.75)
    for key, value in state["model"].items():
        assert torch.equal(ckpt.model[key], value)
    assert ckpt.scheduler == {"last_epoch": 4, "_step_count": 5}
    assert ckpt.rng is not None and torch.equal(ckpt.rng["torch"], state["rng"]["torch"])
    # and the record writes the same layout back
    ckpt.save(tmp_path / "new.pt")
    again = load_checkpoint(tmp_path / "new.pt")
    assert set(again) == set(state)
    assert again["log"] == state["log"] and again["target_spacing"] == [1.5, 0.75]


def test_a_minimal_checkpoint_gets_the_defaults(tmp_path: Path) -> None:
    exp = _exp()
    torch.save(
        {"format_version": FORMAT_VERSION, "model": build(exp.model).state_dict()},
        tmp_path / "min.pt",
    )
    ckpt = Checkpoint.load(tmp_path / "min.pt")
    assert ckpt.spec is None and ckpt.log is None and ckpt.trained_spacing is None
    assert ckpt.best_dice == -math.inf and ckpt.best_epoch == -1
    with pytest.raises(CheckpointError, match="min.pt: has no experiment spec inside"):
        check_compatible(ckpt, exp, tmp_path / "min.pt")


def test_one_check_for_resume_and_for_predict(tmp_path: Path) -> None:
    exp = _exp()
    ckpt = Checkpoint(model={}, spec=exp.model_dump(mode="json"), target_spacing=None)
    check_compatible(ckpt, exp, "a.pt")
    check_compatible(ckpt, exp, "a.pt", resume=True)
    # more epochs: resumable and usable
    longer = exp.model_copy(update={"train": exp.train.model_copy(update={"epochs": 9})})
    check_compatible(ckpt, longer, "a.pt", resume=True)
    check_compatible(ckpt, longer, "a.pt")
    wider = _exp(filters=8)
    with pytest.raises(CheckpointError, match=r"a\.pt: cannot resume: the spec's 'model' section"):
        check_compatible(ckpt, wider, "a.pt", resume=True)
    with pytest.raises(CheckpointError, match=r"model\.filters: checkpoint 4, spec 8"):
        check_compatible(ckpt, wider, "a.pt")
    # another seed: predict does not care, resume does
    reseeded = exp.model_copy(update={"seed": 7})
    check_compatible(ckpt, reseeded, "a.pt")
    with pytest.raises(CheckpointError, match="'seed' section"):
        check_compatible(ckpt, reseeded, "a.pt", resume=True)
