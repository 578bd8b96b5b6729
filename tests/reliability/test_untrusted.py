"""Untrusted files: pickles that would run code, YAML tags that build objects, hostile case names.

Every payload here creates a marker folder when it runs.  Each test first proves that the payload
is live (an unsafe loader does create the marker), then that segcli refuses it with a clear
message and the marker never appears.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.io.checkpoint import save_checkpoint
from segcli.models import build

runner = CliRunner()


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: code chosen by whoever wrote the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def write_spec(root: Path, toy: Path, **extra: Any) -> Path:
    raw = {
        "name": "tiny",
        "data": {"root": str(toy), "patch_size": [16, 16], "val_fraction": 0.25},
        "model": {"arch": "dilated", "dims": 2, "filters": 4, "dilations": [1, 2]},
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0},
        "output": str(root / "runs"),
        **extra,
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def honest_state(spec: Path) -> dict[str, Any]:
    exp = load(spec)
    return {
        "model": build(exp.model).state_dict(),
        "spec": exp.model_dump(mode="json"),
        "epoch": 0,
        "best_dice": 0.0,
        "best_epoch": 0,
    }


# --------------------------------------------------------------------------- checkpoints


def _torch_save(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def _pickle_dump(path: Path, state: dict[str, Any]) -> None:
    with path.open("wb") as handle:
        pickle.dump(state, handle)


def _unsafe_load(path: Path) -> None:
    """What a careless loader would do: torch.load without weights_only, or plain pickle."""
    if zipfile.is_zipfile(path):
        torch.load(path, weights_only=False)
    else:
        with path.open("rb") as handle:
            pickle.load(handle)  # noqa: S301 - the point of the control


@pytest.mark.parametrize("writer", [_torch_save, _pickle_dump], ids=["torch.save", "pickle.dump"])
@pytest.mark.parametrize("where", ["model", "nested"])
def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(
    tmp_path: Path, toy: Path, writer: Any, where: str, user_error, unchanged
) -> None:
    spec = write_spec(tmp_path, toy)
    marker = tmp_path / "PWNED"
    state = honest_state(spec)
    if where == "model":
        state["model"] = Payload(marker)
    else:  # honest weights, with the payload hidden in an innocent-looking key
        state["normalization_stats"] = {"mean": [Payload(marker)]}
    state["format_version"] = 1
    evil = tmp_path / "evil.pt"
    writer(evil, state)

    # the payload is live: an unsafe load runs it
    control = tmp_path / "control.pt"
    writer(control, {"model": Payload(tmp_path / "CONTROL")})
    _unsafe_load(control)
    assert (tmp_path / "CONTROL").is_dir()
    (tmp_path / "CONTROL").rmdir()

    args = ["predict", str(spec), "-i", str(toy / "imagesTr"), "-o", str(tmp_path / "out")]
    with unchanged(tmp_path):
        result = runner.invoke(app, [*args, "--checkpoint", str(evil), "--device", "cpu"])
    user_error(result, "evil.pt: refused", "could run code", "sources you do not trust")
    assert not marker.exists()
    # regression: torch's own text, which suggests loading with weights_only=False, is not shown
    assert "weights_only" not in result.output


def test_resume_refuses_a_checkpoint_that_would_run_code(
    tmp_path: Path, toy: Path, user_error, unchanged
) -> None:
    spec = write_spec(tmp_path, toy)
    marker = tmp_path / "PWNED"
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    torch.save({**honest_state(spec), "rng": Payload(marker)}, run / "checkpoint_last.pt")
    with unchanged(tmp_path):
        result = runner.invoke(app, ["train", str(spec), "--resume", "--device", "cpu"])
    user_error(result, "checkpoint_last.pt: refused", "could run code")
    assert not marker.exists()


def test_an_honest_checkpoint_still_loads(tmp_path: Path, toy: Path) -> None:
    """The counterpart of the refusals: plain tensors and data go through."""
    spec = write_spec(tmp_path, toy)
    ck = save_checkpoint(tmp_path / "ck.pt", honest_state(spec))
    out = tmp_path / "out"
    args = ["predict", str(spec), "-i", str(toy / "imagesTr"), "-o", str(out), "--checkpoint"]
    result = runner.invoke(app, [*args, str(ck), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"ring_00{i}.nii.gz" for i in range(4)]


# --------------------------------------------------------------------------- YAML


def _tagged(marker: Path) -> str:
    return f"!!python/object/apply:os.mkdir ['{marker}']"


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "receptive-field"])
def test_a_yaml_python_tag_is_refused_and_builds_nothing(
    tmp_path: Path, toy: Path, command: str, user_error, unchanged
) -> None:
    marker = tmp_path / "PWNED"
    spec = write_spec(tmp_path, toy)
    spec.write_text(spec.read_text().replace("name: tiny", f"name: {_tagged(marker)}"))

    control = tmp_path / "CONTROL"
    yaml.unsafe_load(_tagged(control))  # the tag is live for an unsafe loader
    assert control.is_dir()
    control.rmdir()

    extra = {
        "train": [],
        "predict": ["-i", str(toy / "imagesTr"), "-o", str(tmp_path / "out")],
        "evaluate": ["--pred", str(toy / "labelsTr"), "--ref", str(toy / "labelsTr")],
        "receptive-field": [],
    }[command]
    if command == "evaluate":
        extra += ["--output", str(tmp_path / "m.csv")]
    with unchanged(tmp_path):
        result = runner.invoke(app, [command, str(spec), *extra])
    user_error(result, "exp.yaml: not valid YAML", "python/object/apply", "remove the tag")
    assert not marker.exists()


def test_a_python_tag_in_an_override_is_refused(
    tmp_path: Path, toy: Path, user_error, unchanged
) -> None:
    marker = tmp_path / "PWNED"
    spec = write_spec(tmp_path, toy)
    with unchanged(tmp_path):
        result = runner.invoke(app, ["train", str(spec), "--set", f"name={_tagged(marker)}"])
    user_error(result, "--set", "not valid YAML")
    assert not marker.exists()


# --------------------------------------------------------------------------- case names


def test_an_explicit_hidden_input_is_refused_not_silently_skipped(
    tmp_path: Path, toy: Path, user_error
) -> None:
    """Regression: ``--input .._0000.nii.gz`` predicted 0 cases and exited 0."""
    spec = write_spec(tmp_path, toy)
    ck = save_checkpoint(tmp_path / "ck.pt", honest_state(spec))
    images = tmp_path / "images"
    images.mkdir()
    hostile = images / ".._0000.nii.gz"
    shutil.copy(toy / "imagesTr" / "ring_000_0000.nii.gz", hostile)
    out = tmp_path / "sub" / "out"
    args = ["predict", str(spec), "-i", str(hostile), "-o", str(out), "--checkpoint", str(ck)]
    result = runner.invoke(app, args)
    user_error(result, "1 case(s) failed", "case name '..'", "rename the input file")
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([spec, ck, hostile]), "nothing may be written, in or out of --output"


def test_case_names_with_separators_fail_alone_and_outputs_stay_in_the_folder(
    tmp_path: Path, toy: Path, user_error
) -> None:
    spec = write_spec(tmp_path, toy)
    ck = save_checkpoint(tmp_path / "ck.pt", honest_state(spec))
    images = tmp_path / "deep" / "images"
    images.mkdir(parents=True)
    source = toy / "imagesTr" / "ring_000_0000.nii.gz"
    for name in ("ok_0000.nii.gz", "a\\b_0000.nii.gz", "up\\..\\..\\x_0000.nii.gz"):
        shutil.copy(source, images / name)
    out = tmp_path / "out"
    args = ["predict", str(spec), "-i", str(images), "-o", str(out), "--checkpoint", str(ck)]
    result = runner.invoke(app, [*args, "--probabilities"])
    user_error(
        result, "2 case(s) failed", "'a\\\\b'", "'up\\\\..\\\\..\\\\x'", "rename the input file"
    )
    assert sorted(p.name for p in out.iterdir()) == ["ok.nii.gz", "ok_probabilities.npz"]
    outside = {p for p in tmp_path.rglob("*") if p.is_file()} - {
        *out.iterdir(),
        *images.iterdir(),
    }
    assert outside == {spec, ck}


def test_evaluate_overlays_are_named_by_case_inside_their_folder(tmp_path: Path, toy: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for folder in (pred, ref):
        folder.mkdir()
        for name in ("ring_000", "x\\..\\y"):
            shutil.copy(toy / "labelsTr" / "ring_000.nii.gz", folder / f"{name}.nii.gz")
    overlays = tmp_path / "png"
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(tmp_path / "m.csv")]
    result = runner.invoke(app, [*args, "--overlays", str(overlays), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in overlays.iterdir()) == ["ring_000.png", "x\\..\\y.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.csv",
        "m_meta.json",
        "m_summary.csv",
        "png",
        "pred",
        "ref",
    ]
