"""Shared fixtures: tiny synthetic data only, no downloads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

if TYPE_CHECKING:
    from segcli.config import Experiment

# The suite runs tiny tensors, where thread start-up costs more than it saves; a second
# thread only oversubscribes the 2-core machines this runs on (subprocesses inherit the env).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO / "experiments"
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test when the shared data are absent (CI)."""
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"shared data set {name} not present at {root}")
    return root


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    """The shared MSD Task04 hippocampus data set (skips the test when absent)."""
    return _shared("msd_task04_hippocampus")


@pytest.fixture(scope="session")
def totalseg() -> Path:
    """The shared TotalSegmentator example CT (skips the test when absent)."""
    return _shared("totalsegmentator_example_ct")


@pytest.fixture(autouse=True, scope="session")
def _preprocessing_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test's preprocessing cache lives in a session temp folder, never in ~/.cache.

    Set in the environment (not a spec key) so that subprocesses (torchrun, the CLI) see it.
    """
    from segcli.data.cache import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("segcli-cache"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def toy2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-case 2D ring-lesion data set (32×32) in the MSD layout."""
    from segcli.data.synth import generate, write_dataset

    out = tmp_path_factory.mktemp("toy2d")
    write_dataset(out, generate(12, dims=2, seed=0))
    return out


@pytest.fixture(scope="session")
def toy3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-case 3D ring-lesion data set (16³, lesion 2, ring distance 3)."""
    from segcli.data.synth import generate, write_dataset

    out = tmp_path_factory.mktemp("toy3d")
    write_dataset(out, generate(6, dims=3, size=16, lesion=2, ring_distance=3, seed=0))
    return out


def tiny_spec(root: Path | str, **sections: dict) -> dict:
    """A raw spec dict for a fast 2D dilated CNN run on ``root`` (override any section)."""
    raw = {
        "name": "tiny",
        "seed": 0,
        "data": {"root": str(root), "patch_size": [32, 32], "val_fraction": 0.25},
        "model": {"arch": "dilated", "dims": 2, "filters": 4, "dilations": [1, 2, 4]},
        "loss": {"name": "dice_ce"},
        "train": {"epochs": 2, "iterations_per_epoch": 3, "batch_size": 4, "workers": 0},
        "inference": {"batch_size": 16},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


# --------------------------------------------------------------------------- checkpoints


def write_checkpoint(
    exp: Experiment, path: Path, seed: int = 0, **extra: Any
) -> tuple[Path, torch.nn.Module]:
    """A checkpoint of a freshly initialised ``exp.model`` (plus ``extra`` keys), written the
    way a hand-made file would be: the dict layer, with only the keys predict needs."""
    from segcli.io.checkpoint import save_checkpoint
    from segcli.models import build

    torch.manual_seed(seed)
    model = build(exp.model).eval()
    state = {"model": model.state_dict(), "spec": exp.model_dump(mode="json"), "epoch": 0}
    save_checkpoint(path, {**state, **extra})
    return path, model


@pytest.fixture
def make_checkpoint() -> Callable[..., tuple[Path, torch.nn.Module]]:
    return write_checkpoint


# --------------------------------------------------------------------------- training runs


def tiny_run(root: Path, epochs: int = 3, **train: Any) -> Experiment:
    """A seconds-long training run: 6 synthetic 16×16 cases, a 2-filter dilated CNN, 2
    iterations of batch 2 per epoch, run folders under ``root/runs`` (``train`` overrides)."""
    from segcli.config import from_dict

    return from_dict(
        {
            "name": "tiny",
            "seed": 0,
            "data": {
                "synthetic": {"dims": 2, "cases": 6, "size": 16, "lesion": 2, "ring_distance": 3},
                "patch_size": [16, 16],
            },
            "model": {"arch": "dilated", "dims": 2, "filters": 2, "dilations": [1, 2]},
            "train": {
                "epochs": epochs,
                "iterations_per_epoch": 2,
                "batch_size": 2,
                "workers": 0,
                **train,
            },
            "output": str(root / "runs"),
        }
    )


@pytest.fixture
def make_tiny_run() -> Callable[..., Experiment]:
    return tiny_run
