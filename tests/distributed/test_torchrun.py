"""Real 2-process runs on CPU (gloo): ``torchrun -m segcli train / predict / evaluate``.

Each launch costs a few seconds (two fresh interpreters importing torch on a 2-core machine),
so every test makes the most of one or two launches.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from segcli.config import load
from segcli.data.synth import generate, write_dataset
from segcli.engine.evaluate import evaluate_folders
from segcli.engine.predict import predict_cases
from segcli.engine.runtime import seed_everything
from segcli.engine.train import fit
from segcli.io.checkpoint import load_checkpoint
from segcli.io.images import read_label
from segcli.models import build

#: one thread per process: two ranks share the two cores of the CI machine; no rank-0 address
#: or port from the environment leaks in (``--standalone`` picks a free port)
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")},
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
for _name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
    ENV.pop(_name, None)


def torchrun(*args: str, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node=nproc -m segcli *args`` (output captured)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "segcli",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


def write_spec(
    path: Path,
    data: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    **train: Any,
) -> Path:
    """A tiny in-memory synthetic run: 6 cases of 16×16 (2 for validation), 198 parameters;
    ``data``, ``model`` and ``train`` update those sections.

    The loss (Dice + CE, per-sample Dice) is a mean over the samples of the batch and the
    network has no batch statistics, so one step on two ranks with batches a and b equals one
    step in one process on a and b together; plain SGD in fp32 keeps that a float-rounding
    identity.
    """
    raw = {
        "name": "dist",
        "seed": 0,
        "data": {
            "synthetic": {"dims": 2, "cases": 6, "size": 16, "lesion": 2, "ring_distance": 3},
            "patch_size": [16, 16],
            "val_fraction": 0.34,
            "augment": {"flip": True, "rotate90": True},
            **(data or {}),
        },
        "model": {"arch": "dilated", "dims": 2, "filters": 4, "dilations": [1, 2], **(model or {})},
        "loss": {"name": "dice_ce"},
        "train": {
            "epochs": 1,
            "iterations_per_epoch": 1,
            "batch_size": 2,
            "workers": 0,
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.0,
            # the identity is one of float32 rounding (auto would be bf16 on a bf16 CPU)
            "precision": "fp32",
            **train,
        },
        "inference": {"batch_size": 4, "precision": "fp32"},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


COMPARED = ("epoch", "train_loss", "val_loss", "val_dice", "lr")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def logged(run: Path) -> list[dict[str, float]]:
    return [
        {k: float(r[k]) for k in COMPARED}
        for r in load_checkpoint(run / "checkpoint_last.pt")["log"]
    ]


def assert_same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in COMPARED:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (key, x, y)


def epoch_lines(stdout: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.startswith("epoch ")]


# --------------------------------------------------------------------------- train


def test_one_step_on_two_ranks_equals_one_step_on_both_batches_in_one_process(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path / "exp.yaml")
    two = torchrun("train", str(spec), "--output", str(tmp_path / "two"), "--device", "cpu")
    assert two.returncode == 0, two.stderr
    # one process, the batch of both ranks (batch_size is per rank)
    fit(load(spec, ["train.batch_size=4"]), tmp_path / "one", device="cpu")
    # one process with one rank's batch size: what two ranks drawing the same patches give
    fit(load(spec), tmp_path / "half", device="cpu")

    seed_everything(0)
    initial = build(load(spec).model).state_dict()
    distributed, single = (
        weights(tmp_path / "two/checkpoint_last.pt"),
        weights(tmp_path / "one/checkpoint_last.pt"),
    )
    assert max_difference(distributed, initial) > 1e-3  # the step moved the weights
    assert max_difference(distributed, single) < 1e-6
    assert max_difference(distributed, weights(tmp_path / "half/checkpoint_last.pt")) > 1e-4
    # the loss is the mean over both ranks, validation the mean over both ranks' cases
    assert_same_rows(logged(tmp_path / "two"), logged(tmp_path / "one"))
    assert epoch_lines(two.stdout) == ["1/1"]  # rank 1 is quiet
    assert "× 2 processes" in two.stdout


def test_distributed_training_resumes_like_one_process_and_logs_every_epoch_once(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path / "exp.yaml", epochs=2, iterations_per_epoch=2, momentum=0.9)
    run = tmp_path / "two"
    args = ("train", str(spec), "--output", str(run), "--device", "cpu")
    first = torchrun(*args)
    assert first.returncode == 0, first.stderr
    assert epoch_lines(first.stdout) == ["1/2", "2/2"]
    again = torchrun(*args, "--resume", "--set", "train.epochs=3")
    assert again.returncode == 0, again.stderr
    assert epoch_lines(again.stdout) == ["3/3"]

    with (run / "log.csv").open(newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1, 2]
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 2
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint_best.pt",
        "checkpoint_last.pt",
        "config.yaml",
        "curves.png",
        "log.csv",
        "precision.json",
        "split.json",
    ]
    # the same in one process with both ranks' batch, stopped and resumed the same way
    fit(load(spec, ["train.batch_size=4"]), tmp_path / "one", device="cpu")
    fit(load(spec, ["train.batch_size=4", "train.epochs=3"]), tmp_path / "one", "cpu", True)
    assert (
        max_difference(
            weights(run / "checkpoint_last.pt"), weights(tmp_path / "one/checkpoint_last.pt")
        )
        < 1e-5
    )
    assert_same_rows(logged(run), logged(tmp_path / "one"))


# --------------------------------------------------------------------------- predict, evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(spec, checkpoint, dataset): a model trained in one process (150 steps), 7 new cases."""
    root = tmp_path_factory.mktemp("trained")
    spec = write_spec(
        root / "exp.yaml",
        data={"synthetic": {"dims": 2, "cases": 12, "size": 16, "lesion": 2, "ring_distance": 3},
              "foreground_fraction": 0.9},
        model={"dilations": [1, 2, 4]},
        iterations_per_epoch=150, batch_size=8, optimizer="adamw", lr=0.02,
    )  # fmt: skip
    fit(load(spec), root / "run", device="cpu")
    data = root / "toy"
    write_dataset(data, generate(7, dims=2, size=16, lesion=2, ring_distance=3, seed=3))
    return spec, root / "run/checkpoint_last.pt", data


def test_torchrun_predict_writes_every_case_once_and_evaluate_matches_one_process(
    tmp_path: Path, trained: tuple[Path, Path, Path]
) -> None:
    spec, checkpoint, data = trained
    common = ("--checkpoint", str(checkpoint), "--device", "cpu")
    pred = tmp_path / "pred"
    two = torchrun("predict", str(spec), "-i", str(data / "imagesTr"), "-o", str(pred), *common)
    assert two.returncode == 0, two.stderr
    cases = sorted(p.name.replace("_0000.nii.gz", "") for p in (data / "imagesTr").iterdir())
    assert len(cases) == 7
    # one summary line (rank 0), counting every case once (a case done by both ranks: 8+)
    assert two.stdout.count("predicted 7 case(s)") == 1, two.stdout
    assert sorted(p.name for p in pred.iterdir()) == [f"{c}.nii.gz" for c in cases]
    single = predict_cases(load(spec), data / "imagesTr", tmp_path / "one", [checkpoint], "cpu")
    assert single.written == cases
    for case in cases:
        a, b = (
            read_label(pred / f"{case}.nii.gz")[0],
            read_label(tmp_path / f"one/{case}.nii.gz")[0],
        )
        assert np.array_equal(a, b), case
    assert any(read_label(pred / f"{c}.nii.gz")[0].any() for c in cases)  # not all empty

    out = tmp_path / "metrics"
    evaluated = torchrun(
        "evaluate", "--pred", str(pred), "--ref", str(data / "labelsTr"),
        "-o", str(out / "two.csv"), "--workers", "1", "--overlays", str(out / "overlays"),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.count("7 cases: mean / median per label") == 1
    evaluate_folders(pred, data / "labelsTr", out / "one.csv", workers=1)
    assert (out / "two.csv").read_text() == (out / "one.csv").read_text()
    assert (out / "two_summary.csv").read_text() == (out / "one_summary.csv").read_text()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{c}.png" for c in cases]
    assert sorted(p.name for p in out.iterdir()) == [  # the staging folder is gone
        "one.csv", "one_meta.json", "one_summary.csv", "overlays",
        "two.csv", "two_meta.json", "two_summary.csv",
    ]  # fmt: skip


# --------------------------------------------------------------------------- failures


DRIVER = r"""
import json, sys
from pathlib import Path
from typing import Any
from segcli.config import load
from segcli.engine.evaluate import evaluate_folders
from segcli.engine.predict import predict_cases
from segcli.errors import SegcliError

spec, checkpoint, images, pred, ref, bad, out = map(Path, sys.argv[1:])
report = {}
result = predict_cases(load(spec), images, pred, [checkpoint], "cpu")
report["written"], report["failed"] = result.written, sorted(result.failed)
try:
    evaluate_folders(bad, ref, out / "metrics.csv", metrics=["dice"], workers=1)
except SegcliError as exc:
    report["error"] = f"{type(exc).__name__}: {exc}"
print("REPORT " + json.dumps(report))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_rank_gets_the_gathered_results_and_the_errors_of_the_others(
    tmp_path: Path, trained: tuple[Path, Path, Path]
) -> None:
    """Two processes started as torchrun would (no agent that kills the survivors): a case
    that fails on one rank is reported by both, and an evaluate error on rank 1 is raised on
    rank 0 too instead of leaving it waiting."""
    spec, checkpoint, data = trained
    images = tmp_path / "images"
    shutil.copytree(data / "imagesTr", images)
    (images / "zz_broken_0000.nii.gz").write_bytes(b"not an image")  # the 8th case: rank 1
    pred = tmp_path / "pred"
    bad = tmp_path / "bad"
    shutil.copytree(data / "labelsTr", bad)
    # ring_003 (rank 1 of 2): non-integer labels, found only when the case is read
    image = sitk.ReadImage(str(bad / "ring_003.nii.gz"))
    floats = sitk.GetImageFromArray(sitk.GetArrayFromImage(image).astype(np.float32) + 0.5)
    floats.CopyInformation(image)
    sitk.WriteImage(floats, str(bad / "ring_003.nii.gz"))
    out = tmp_path / "out"
    out.mkdir()

    env = {**ENV, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(free_port())
    args = [spec, checkpoint, images, pred, data / "labelsTr", bad, out]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, *map(str, args)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=os.getcwd(),
        )
        for r in range(2)
    ]
    reports = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
        reports.append(json.loads(lines[-1].removeprefix("REPORT ")))
    cases = [f"ring_{i:03d}" for i in range(7)]
    assert reports[0] == reports[1]  # every rank returns the same, gathered result
    assert reports[0]["written"] == cases
    assert reports[0]["failed"] == ["zz_broken"]
    assert reports[0]["error"].startswith("DataError: case 'ring_003'")
    assert "non-integer" in reports[0]["error"]
    assert sorted(p.name for p in pred.iterdir()) == [f"{c}.nii.gz" for c in cases]
    assert list(out.iterdir()) == []  # nothing written when a case failed
