"""``segcli receptive-field``: table, JSON, --empirical, --input-size N N, and the error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from segcli.cli import app

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
runner = CliRunner()

#: The lecture's table (Ciresan et al. 2012): maps and neurons per layer.
LECTURE_TABLE = [
    "1 map of 95x95 neurons",
    "48 maps of 92x92 neurons",
    "48 maps of 46x46 neurons",
    "48 maps of 42x42 neurons",
    "48 maps of 21x21 neurons",
    "48 maps of 18x18 neurons",
    "48 maps of 9x9 neurons",
    "48 maps of 6x6 neurons",
    "48 maps of 3x3 neurons",
    "200 neurons",
    "2 neurons",
]


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["receptive-field", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_toy_cnn_json() -> None:
    out = run_json(str(EXPERIMENTS / "toy-cnn.yaml"))
    assert out["receptive_field"] == [7, 7]
    assert out["parameters"] == 1266
    assert out["output_size"] == [32, 32]
    assert [layer["name"] for layer in out["layers"]] == [
        "input",
        "conv1",
        "conv2",
        "conv3",
        "head",
    ]
    assert sum(layer["parameters"] for layer in out["layers"]) == out["parameters"]
    assert "empirical_receptive_field" not in out


def test_toy_dilated_json_with_empirical_field() -> None:
    out = run_json(str(EXPERIMENTS / "toy-dilated.yaml"), "--empirical")
    assert out["receptive_field"] == out["empirical_receptive_field"] == [15, 15]
    assert out["parameters"] == run_json(str(EXPERIMENTS / "toy-cnn.yaml"))["parameters"]


def test_input_size_takes_one_value_per_axis() -> None:
    out = run_json(str(EXPERIMENTS / "unet-2015.yaml"), "--input-size", "572", "572")
    assert out["input_size"] == [572, 572] and out["output_size"] == [388, 388]
    assert out["parameters"] == 31_030_658
    out = run_json(str(EXPERIMENTS / "toy-cnn.yaml"), "--input-size", "20", "--input-size", "24")
    assert out["output_size"] == [20, 24]


def test_set_overrides_reach_the_model() -> None:
    out = run_json(str(EXPERIMENTS / "toy-cnn.yaml"), "--set", "model.layers=5")
    assert out["receptive_field"] == [11, 11]


def test_patch_cnn_reproduces_the_lecture_table(tmp_path: Path) -> None:
    spec = tmp_path / "ciresan.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "ciresan",
                "data": {"root": "unused", "patch_size": [64, 64]},
                "model": {"arch": "patch_cnn", "mode": "window"},
            }
        )
    )
    out = run_json(str(spec))
    assert [layer["maps_and_neurons"] for layer in out["layers"]] == LECTURE_TABLE
    assert out["receptive_field"] == [95, 95]
    result = runner.invoke(app, ["receptive-field", str(spec)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for line in LECTURE_TABLE:
        assert line in result.stdout


def test_table_shows_totals() -> None:
    result = runner.invoke(
        app,
        ["receptive-field", str(EXPERIMENTS / "toy-dilated.yaml"), "--empirical"],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    assert "15×15 (analytic), 15×15 (empirical)" in result.stdout
    assert "1,266" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["unet-2015.yaml", "--input-size", "570", "570"], "nearby sizes that work: 556 or 572"),
        (["unet-2015.yaml", "--input-size", "64", "64"], "smallest size that works is 188"),
        (["toy-unet.yaml", "--set", "model.depth=6"], "data.patch_size [32, 32]"),
        (["toy-cnn.yaml", "--input-size", "32", "32", "32"], "model.dims is 2"),
        (["toy-cnn.yaml", "--set", "model.dilations=[1,2]"], "model.dilations"),
    ],
)
def test_bad_specs_exit_1_with_one_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["receptive-field", str(EXPERIMENTS / args[0]), *args[1:]])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_missing_spec_file_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["receptive-field", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "not found" in result.output


def test_anisotropic_unet_prints_per_axis_values(tmp_path: Path) -> None:
    spec = tmp_path / "aniso.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "aniso",
                "data": {"root": "unused", "patch_size": [8, 32, 32]},
                "model": {
                    "arch": "unet",
                    "dims": 3,
                    "filters": 1,
                    "strides": [[1, 2, 2], [2, 2, 2]],
                    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                },
            }
        )
    )
    out = run_json(str(spec), "--empirical")
    assert out["receptive_field"] == out["empirical_receptive_field"] == [18, 44, 44]
    pool = next(layer for layer in out["layers"] if layer["name"] == "down1.pool")
    assert pool["kernel"] == [1, 2, 2] and pool["jump"] == [1, 2, 2]
    assert pool["output_size"] == [8, 16, 16]
    result = runner.invoke(app, ["receptive-field", str(spec)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "18×44×44 (analytic)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "down1.pool" in line)
    assert "8×16×16" in row and "1×2×2" in row
    bad = runner.invoke(app, ["receptive-field", str(spec), "--input-size", "5", "32", "32"])
    assert bad.exit_code == 1
    assert "total stride is 2×4×4" in " ".join(bad.output.split())
