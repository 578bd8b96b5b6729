"""Outputs appear whole or not at all: temp file in the same folder, then a rename.

Interruptions are simulated at the two moments that matter — while the bytes are being written
and at the rename — and the previous version of the file must survive untouched, with no temp
file left behind.  Then the command-level guarantees: a failing evaluate writes no CSV, and a
failing case in predict leaves no file while the other cases finish.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.engine.run_dir import atomic_write_text, read_log, write_log
from segcli.io import images as images_module
from segcli.io.checkpoint import load_checkpoint, save_checkpoint
from segcli.io.images import make_geometry, read_label, write_image
from segcli.models import build

runner = CliRunner()

# --------------------------------------------------------------------------- interrupted writes

GEOMETRY = make_geometry((6, 5), (0.5, 2.0))


def _nifti(path: Path, value: int) -> None:
    write_image(path, np.full((6, 5), value, np.uint8), GEOMETRY)


def _checkpoint(path: Path, value: int) -> None:
    save_checkpoint(path, {"model": {"w": torch.full((3,), float(value))}})


def _config(path: Path, value: int) -> None:
    atomic_write_text(path, yaml.safe_dump({"name": f"run{value}"}))


def _log(path: Path, value: int) -> None:
    row = {"epoch": value, "train_loss": 1.0, "val_loss": 2.0, "val_dice": 0.5, "lr": 1e-3}
    write_log(path, [{**row, "seconds": 1.0}])


def _partial_sitk(image: Any, path: str, *args: Any) -> None:
    Path(path).write_bytes(b"\x1f\x8b half a NIfTI")
    raise KeyboardInterrupt


def _partial_torch(state: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
    handle.write(b"PK half a checkpoint")
    raise KeyboardInterrupt


WRITERS: dict[str, tuple[str, Callable[[Path, int], None], Callable[..., None] | None]] = {
    # name: (file name, writer, a serializer that stops half-way, or None)
    "nifti": ("case.nii.gz", _nifti, _partial_sitk),
    "checkpoint": ("checkpoint_last.pt", _checkpoint, _partial_torch),
    "config": ("config.yaml", _config, None),
    "log": ("log.csv", _log, None),
}


def _interrupt_serializer(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    partial = WRITERS[kind][2]
    if kind == "nifti":
        monkeypatch.setattr(images_module.sitk, "WriteImage", partial)
    elif kind == "checkpoint":
        monkeypatch.setattr(torch, "save", partial)


def _interrupt_rename(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    def refuse(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", refuse)


# plain text is written in one call, so for it the rename is the moment that matters
MOMENTS = [
    *(
        pytest.param(kind, _interrupt_serializer, id=f"{kind}-while-writing")
        for kind, (_, _, partial) in WRITERS.items()
        if partial is not None
    ),
    *(pytest.param(kind, _interrupt_rename, id=f"{kind}-at-the-rename") for kind in WRITERS),
]


@pytest.mark.parametrize(("kind", "moment"), MOMENTS)
def test_an_interrupted_write_keeps_the_previous_file_whole(
    kind: str, moment: Callable[[pytest.MonkeyPatch, str], None], tmp_path: Path
) -> None:
    name, write, _ = WRITERS[kind]
    path = tmp_path / name
    write(path, 1)
    before = path.read_bytes()
    with pytest.MonkeyPatch.context() as patch:
        moment(patch, kind)
        with pytest.raises(KeyboardInterrupt):
            write(path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "a temp file was left behind"
    assert path.read_bytes() == before
    write(path, 3)  # and the next write goes through
    assert path.read_bytes() != before


def test_the_written_files_read_back(tmp_path: Path) -> None:
    """The four writers above produce files their readers accept (the test is not vacuous)."""
    _nifti(tmp_path / "a.nii.gz", 4)
    _checkpoint(tmp_path / "c.pt", 4)
    _config(tmp_path / "config.yaml", 4)
    _log(tmp_path / "log.csv", 4)
    assert int(read_label(tmp_path / "a.nii.gz")[0].max()) == 4
    assert float(load_checkpoint(tmp_path / "c.pt")["model"]["w"][0]) == 4.0
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"name": "run4"}
    assert read_log(tmp_path / "log.csv")[0]["epoch"] == 4


# --------------------------------------------------------------------------- evaluate


@pytest.fixture
def folders(tmp_path: Path, toy: Path) -> Path:
    shutil.copytree(toy / "labelsTr", tmp_path / "ref")
    shutil.copytree(toy / "labelsTr", tmp_path / "pred")
    return tmp_path


def _evaluate(root: Path) -> Any:
    args = ["evaluate", "--pred", str(root / "pred"), "--ref", str(root / "ref")]
    return runner.invoke(app, [*args, "--output", str(root / "m.csv"), "--workers", "1"])


def test_a_failing_evaluate_writes_no_csv_and_keeps_the_previous_ones(
    folders: Path, user_error
) -> None:
    first = _evaluate(folders)
    assert first.exit_code == 0, first.output
    old = {p.name: p.read_bytes() for p in folders.glob("*.csv")}
    assert sorted(old) == ["m.csv", "m_summary.csv"]

    # the last case (in evaluation order) is broken: every earlier case was already scored
    pred = folders / "pred" / "ring_003.nii.gz"
    array, geometry = read_label(pred)
    write_image(pred, array.astype(np.float32) + 0.25, geometry)
    result = _evaluate(folders)
    user_error(result, "case 'ring_003'", "non-integer")
    assert {p.name: p.read_bytes() for p in folders.glob("*.csv")} == old
    assert not [p for p in folders.iterdir() if p.name.startswith(".")]


def test_stale_temp_files_of_a_killed_writer_are_ignored(folders: Path) -> None:
    """A SIGKILL during a write leaves a hidden temp file; readers never take it for a case."""
    source = folders / "pred" / "ring_000.nii.gz"
    (folders / "pred" / ".ring_000.nii.gz.1234.tmp.nii.gz").write_bytes(source.read_bytes()[:50])
    result = _evaluate(folders)
    assert result.exit_code == 0, result.output
    cases = {line.split(",")[0] for line in (folders / "m.csv").read_text().splitlines()[1:]}
    assert cases == {f"ring_00{i}" for i in range(4)}


# --------------------------------------------------------------------------- predict


def test_a_failing_case_in_predict_leaves_no_file_and_the_others_finish(
    tmp_path: Path, toy: Path, user_error
) -> None:
    raw = {
        "name": "tiny",
        "data": {"root": str(toy), "patch_size": [16, 16]},
        "model": {"arch": "dilated", "dims": 2, "filters": 4, "dilations": [1, 2]},
        "output": str(tmp_path / "runs"),
    }
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(raw))
    exp = load(spec)
    state = {"model": build(exp.model).state_dict(), "spec": exp.model_dump(mode="json")}
    ck = save_checkpoint(tmp_path / "ck.pt", state)
    images = tmp_path / "images"
    shutil.copytree(toy / "imagesTr", images)
    broken = images / "ring_001_0000.nii.gz"
    broken.write_bytes(broken.read_bytes()[:-20])  # truncated: the case fails, not the command
    (images / "ring_002_0000.nii.gz").write_bytes(b"garbage" * 30)

    out = tmp_path / "out"
    args = ["predict", str(spec), "-i", str(images), "-o", str(out), "--checkpoint", str(ck)]
    result = runner.invoke(app, [*args, "--probabilities", "--device", "cpu"])
    user_error(result, "2 case(s) failed", "- ring_001:", "truncated", "- ring_002:", "cannot read")
    assert "predicted 2 case(s)" in result.output  # ring_000 and ring_003, after the failures
    names = sorted(p.name for p in out.iterdir())  # hidden temp files included
    assert names == [
        "ring_000.nii.gz",
        "ring_000_probabilities.npz",
        "ring_003.nii.gz",
        "ring_003_probabilities.npz",
    ]
    for case in ("ring_000", "ring_003"):
        labels, geometry = read_label(out / f"{case}.nii.gz")
        assert labels.shape == (16, 16) and labels.max() <= 1
        with np.load(out / f"{case}_probabilities.npz") as npz:
            assert npz["probabilities"].shape == (2, 16, 16)
