"""One training process per run folder: ``RunDir.lock`` (a flock on ``<run>/.lock``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from segcli.engine.run_dir import RunDir
from segcli.errors import SegcliError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def segcli(*args: str) -> list[str]:
    return [sys.executable, "-m", "segcli", *args]


def spec(root: Path, epochs: int) -> Path:
    raw = {
        "name": "locked",
        "seed": 0,
        "data": {"synthetic": {"dims": 2, "cases": 8, "size": 32}, "patch_size": [32, 32]},
        "model": {"arch": "dilated", "dims": 2, "filters": 4},
        "train": {"epochs": epochs, "iterations_per_epoch": 2, "batch_size": 4, "workers": 0},
        "output": str(root / "runs"),
    }
    path = root / f"exp{epochs}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_for(condition, proc: subprocess.Popen[str], what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the first run ended or hung before {what}:\n{out}\n{err}")
        time.sleep(0.02)


def test_second_train_on_the_same_folder_is_refused_and_a_killed_holder_leaves_no_lock(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    first = subprocess.Popen(
        segcli("train", str(spec(tmp_path, 500)), "--output", str(run), "--device", "cpu"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        lock = run / ".lock"
        wait_for(lambda: lock.is_file() and lock.read_text().strip(), first, "taking the lock")
        assert lock.read_text().strip() == str(first.pid)
        # wait until it really trains (writes files into the folder), then start a second one
        wait_for(lambda: (run / "config.yaml").is_file(), first, "writing config.yaml")
        second = subprocess.run(
            segcli("train", str(spec(tmp_path, 2)), "--output", str(run), "--device", "cpu"),
            capture_output=True,
            text=True,
            timeout=120,
            env=ENV,
        )
        output = " ".join((second.stdout + second.stderr).split())
        assert second.returncode == 1, output
        assert "Traceback" not in output
        assert f"PID {first.pid}" in output and str(run) in output
        assert first.poll() is None  # the first run goes on
        wait_for(lambda: (run / "checkpoint_last.pt").is_file(), first, "its first epoch")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    # a crashed holder: the file (with its dead PID) is still there, the lock is not
    assert (run / ".lock").read_text().strip() == str(first.pid)
    resumed = subprocess.run(
        segcli("train", str(spec(tmp_path, 500)), "--output", str(run), "--device", "cpu")
        + ["--resume", "--set", "train.epochs=2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not (run / ".lock").exists()  # released and removed on exit


def test_lock_in_process_refuses_a_second_holder_and_cleans_up(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "new" / "run")
    with run.lock():
        assert (run.path / ".lock").read_text().strip() == str(os.getpid())
        # a second open file description is a second holder, even in the same process
        with pytest.raises(SegcliError, match=rf"{run.path}.*PID {os.getpid()}"), run.lock():
            pass
        assert (run.path / ".lock").is_file()  # the refused attempt left the holder's file
    assert not run.path.exists()  # created by the lock, nothing written: removed again
    with run.lock():
        (run.path / "log.csv").write_text("epoch\n")
    assert sorted(p.name for p in run.path.iterdir()) == ["log.csv"]
    with run.lock(enabled=False):
        assert not (run.path / ".lock").exists()


def test_lock_refuses_an_unwritable_place(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SegcliError, match="is a file"), RunDir(tmp_path / "file" / "run").lock():
        pass
