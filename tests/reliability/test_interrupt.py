"""Interrupted training: SIGKILL loses at most one epoch, Ctrl-C says how to resume, and a
resumed run logs every epoch exactly once with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.engine import run_dir as run_dir_module
from segcli.engine import train as train_module
from segcli.engine.train import fit
from segcli.errors import Interrupted
from segcli.io.checkpoint import load_checkpoint

runner = CliRunner()

#: the columns that must match an uninterrupted run (``seconds`` is wall time)
COMPARED = ("epoch", "train_loss", "val_loss", "val_dice", "lr")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def compared(path: Path) -> list[tuple[str, ...]]:
    return [tuple(row[c] for c in COMPARED) for row in read_rows(path)]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------- real processes

EPOCHS = 5


def process_spec(root: Path) -> Path:
    """The tiny run of the kill tests: 12 synthetic 32×32 cases, a 4-filter dilated CNN."""
    raw = {
        "name": "killed",
        "seed": 0,
        "data": {"synthetic": {"dims": 2, "cases": 12, "size": 32}, "patch_size": [32, 32]},
        "model": {"arch": "dilated", "dims": 2, "filters": 4},
        "train": {"epochs": EPOCHS, "iterations_per_epoch": 3, "batch_size": 4, "workers": 0},
        "output": str(root / "runs"),
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def segcli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segcli", *args]


#: one thread per process: the runs compare equal whatever the thread count, and two
#: single-threaded processes share the two cores of a busy machine far better than two
#: multi-threaded ones
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        segcli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(segcli(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


def start_and_wait_for_epochs(args: list[str], log: Path, epochs: int) -> subprocess.Popen[str]:
    """Start ``segcli *args`` and return once ``log`` holds ``epochs`` rows (still running)."""
    proc = start(*args)
    deadline = time.monotonic() + 120
    while len(read_rows(log)) < epochs:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"training ended or hung before epoch {epochs} was logged:\n{out}\n{err}")
        time.sleep(0.02)
    return proc


class Reference:
    """The uninterrupted run, trained in its own process alongside the test's own runs."""

    def __init__(self, root: Path) -> None:
        self.path = root / "run"
        self.proc = start(
            "train", str(process_spec(root)), "--output", str(self.path), "--device", "cpu"
        )
        self.done = False

    def wait(self) -> Path:
        if not self.done:
            _, err = self.proc.communicate(timeout=180)
            assert self.proc.returncode == 0, err
            epochs = [int(r["epoch"]) for r in read_rows(self.path / "log.csv")]
            assert epochs == list(range(EPOCHS))
            self.done = True
        return self.path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference(tmp_path_factory.mktemp("reference"))


def test_sigkill_loses_at_most_one_epoch_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, reference: Reference
) -> None:
    spec = process_spec(tmp_path)
    run_dir = tmp_path / "run"
    args = ["train", str(spec), "--output", str(run_dir), "--device", "cpu"]
    proc = start_and_wait_for_epochs(args, run_dir / "log.csv", 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    kept = compared(run_dir / "log.csv")
    assert 2 <= len(kept) < EPOCHS, "the kill came too late to interrupt anything"
    saved = load_checkpoint(run_dir / "checkpoint_last.pt")
    assert int(saved["epoch"]) + 1 >= len(kept)  # the checkpoint is never behind the log

    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ref = reference.wait()
    assert kept == compared(ref / "log.csv")[: len(kept)]
    assert compared(run_dir / "log.csv") == compared(ref / "log.csv")
    assert same_weights(run_dir / "checkpoint_last.pt", ref / "checkpoint_last.pt")


@pytest.mark.slow
def test_sigint_saves_a_resumable_run_and_prints_the_command_that_resumes_it(
    tmp_path: Path, reference: Reference
) -> None:
    spec = process_spec(tmp_path)
    run_dir = tmp_path / "run"
    args = ["train", str(spec), "--output", str(run_dir), "--device", "cpu"]
    proc = start_and_wait_for_epochs(args, run_dir / "log.csv", 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    message = " ".join(err.split())
    assert re.match(r"error: interrupted (at|after) epoch [1-5]/5; ", message), message
    assert "checkpoint_last.pt keeps the" in message

    command = shlex.split(message.split("resume with: ", 1)[1])
    assert command[:2] == ["segcli", "train"] and "--resume" in command
    resumed = run(*command[1:])
    assert resumed.returncode == 0, resumed.stderr
    ref = reference.wait()
    assert compared(run_dir / "log.csv") == compared(ref / "log.csv")
    assert same_weights(run_dir / "checkpoint_last.pt", ref / "checkpoint_last.pt")


# --------------------------------------------------------------------------- in process


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """In-process runs on one thread too (restored afterwards), as fast as on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after the raise runs, nothing catches it."""


def test_a_kill_between_checkpoint_and_log_still_logs_every_epoch_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_tiny_run
) -> None:
    """Regression: the resumed log lost the epoch whose checkpoint was saved but not logged."""
    exp = make_tiny_run(tmp_path)
    fit(exp, run_dir=tmp_path / "reference", device="cpu")

    real_write_log = run_dir_module.write_log

    def dies_at_second_epoch(path: Path, rows: list[dict[str, Any]]) -> None:
        if len(rows) == 2:  # checkpoint_last.pt of epoch 1 is on disk, its log row is not
            raise _Killed
        real_write_log(path, rows)

    monkeypatch.setattr(run_dir_module, "write_log", dies_at_second_epoch)
    with pytest.raises(_Killed):
        fit(exp, run_dir=tmp_path / "run", device="cpu")
    assert int(load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["epoch"]) == 1
    assert [r["epoch"] for r in read_rows(tmp_path / "run" / "log.csv")] == ["0"]  # lagging

    monkeypatch.setattr(run_dir_module, "write_log", real_write_log)
    fit(exp, run_dir=tmp_path / "run", device="cpu", resume=True)
    assert compared(tmp_path / "run" / "log.csv") == compared(tmp_path / "reference" / "log.csv")
    assert same_weights(
        tmp_path / "run" / "checkpoint_last.pt", tmp_path / "reference" / "checkpoint_last.pt"
    )


def _interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Ctrl-C arrives during optimisation step ``step`` (0-based, counted over the run)."""
    real = train_module.compute_loss
    seen = [0]

    def loss(*args: Any, **kwargs: Any) -> Any:
        if seen[0] == step:
            raise KeyboardInterrupt
        seen[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", loss)


def test_ctrl_c_in_the_first_epoch_says_start_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error, make_tiny_run
) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(make_tiny_run(tmp_path).model_dump(mode="json")))
    _interrupt_at_step(monkeypatch, 1)
    result = runner.invoke(app, ["train", str(spec), "--device", "cpu"])
    user_error(
        result,
        "interrupted at epoch 1/3; no epoch was complete",
        f"start again with: segcli train {spec} --device cpu",
        code=130,
    )
    assert "--resume" not in result.output
    assert not list((tmp_path / "runs" / "tiny").glob("checkpoint_*.pt"))


def test_ctrl_c_later_names_the_saved_epochs_and_the_resume_command_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_error, make_tiny_run
) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(make_tiny_run(tmp_path, epochs=2).model_dump(mode="json")))
    run_dir = tmp_path / "elsewhere"
    args = ["train", str(spec), "--output", str(run_dir), "--set", "train.epochs=3"]
    _interrupt_at_step(monkeypatch, 3)  # epoch 2 (1-based) of 3, after 2 steps per epoch
    result = runner.invoke(app, args)
    user_error(
        result, "interrupted at epoch 2/3", "checkpoint_last.pt keeps the 1 complete", code=130
    )
    command = shlex.split(" ".join(result.output.split()).split("resume with: ", 1)[1])
    assert command[:3] == ["segcli", "train", str(spec)]
    assert {"--resume", "--output", str(run_dir), "train.epochs=3"} <= set(command)
    assert [r["epoch"] for r in read_rows(run_dir / "log.csv")] == ["0"]

    monkeypatch.undo()
    resumed = runner.invoke(app, command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in read_rows(run_dir / "log.csv")] == ["0", "1", "2"]


def test_fit_raises_interrupted_which_is_still_a_keyboard_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_tiny_run
) -> None:
    """Python API callers that catch KeyboardInterrupt keep working."""
    _interrupt_at_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt) as caught:
        fit(make_tiny_run(tmp_path), run_dir=tmp_path / "run", device="cpu")
    assert isinstance(caught.value, Interrupted) and caught.value.resumable
    assert str(caught.value).startswith("interrupted at epoch 2/3")
    assert os.path.isfile(tmp_path / "run" / "checkpoint_last.pt")


def test_ctrl_c_after_the_checkpoint_of_an_epoch_counts_that_epoch_as_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_tiny_run
) -> None:
    def interrupted_plot(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # arrives while curves.png is drawn, after checkpoint_last.pt

    monkeypatch.setattr(run_dir_module, "plot_curves", interrupted_plot)
    with pytest.raises(Interrupted, match=r"interrupted after epoch 1/3; .* keeps the 1 complete"):
        fit(make_tiny_run(tmp_path), run_dir=tmp_path / "run", device="cpu")
    assert int(load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["epoch"]) == 0
