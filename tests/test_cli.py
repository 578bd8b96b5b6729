"""The CLI shell: help, synth, and the one error path (exit 1, one message, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.io.dataset import find_cases

runner = CliRunner()


def test_help_lists_all_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "train", "predict", "evaluate", "receptive-field"):
        assert command in result.output


@pytest.mark.parametrize("command", ["synth", "train", "predict", "evaluate", "receptive-field"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_synth_3d_writes_valid_pairs(tmp_path: Path) -> None:
    out = tmp_path / "toy3d"
    result = runner.invoke(app, ["synth", str(out), "--dims", "3", "--cases", "10", "--size", "20"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 3D cases" in result.output
    cases = find_cases(out)
    assert len(cases) == 10 and all(c.label is not None for c in cases)
    assert (out / "dataset.json").is_file()


def test_synth_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert runner.invoke(app, ["synth", str(tmp_path / name), "--cases", "3"]).exit_code == 0
    a = sorted((tmp_path / "a").rglob("*.nii.gz"))
    b = sorted((tmp_path / "b").rglob("*.nii.gz"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_synth_bad_options_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--size", "8"])
    assert result.exit_code == 1
    assert "does not fit an image of size 8" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_misspelt_key_exits_1_with_suggestion(tmp_path: Path) -> None:
    spec = yaml.safe_load((Path(__file__).parent.parent / "experiments/toy-cnn.yaml").read_text())
    spec["model"]["filtres"] = spec["model"].pop("filters")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    for command in (["train", str(path)], ["receptive-field", str(path)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "model.filtres" in result.output and "did you mean 'model.filters'?" in result.output
        assert "Traceback" not in result.output


def test_bad_override_exits_1(tmp_path: Path) -> None:
    spec = Path(__file__).parent.parent / "experiments/toy-cnn.yaml"
    result = runner.invoke(app, ["train", str(spec), "--set", "train.epoch=2"])
    assert result.exit_code == 1 and "did you mean 'train.epochs'?" in result.output


def test_usage_error_exits_2() -> None:
    assert runner.invoke(app, ["synth"]).exit_code == 2


def test_console_script_runs_as_module(tmp_path: Path) -> None:
    """`python -m segcli` (what torchrun uses) shows errors without a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "segcli", "train", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "missing.yaml: spec file not found" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_quiet_after_the_command_silences_output(tmp_path: Path) -> None:
    from segcli.engine import runtime

    try:
        result = runner.invoke(app, ["synth", str(tmp_path / "q"), "--cases", "2", "--quiet"])
        assert result.exit_code == 0 and result.output == ""
        assert (tmp_path / "q" / "dataset.json").is_file()
    finally:
        runtime.set_quiet(False)
