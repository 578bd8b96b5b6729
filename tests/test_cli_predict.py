"""``segcli predict`` through the CLI: exit codes, messages, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.io.checkpoint import save_checkpoint
from segcli.io.images import make_geometry, read_geometry, read_label, write_image
from segcli.models import build

runner = CliRunner()


def setup(tmp_path: Path, filters: int = 3) -> tuple[Path, Path]:
    """A 2-D spec, a checkpoint in its run folder and two images; returns (spec, images)."""
    raw = {
        "name": "cli",
        "data": {"root": str(tmp_path / "unused"), "patch_size": [8, 8]},
        "model": {"arch": "cnn", "dims": 2, "filters": filters, "layers": 2},
        "inference": {"batch_size": 4},
        "output": str(tmp_path / "runs"),
    }
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(raw))
    exp = load(spec)
    torch.manual_seed(0)
    state = {
        "model": build(exp.model).state_dict(),
        "spec": exp.model_dump(mode="json"),
        "epoch": 3,
    }
    save_checkpoint(tmp_path / "runs" / "cli" / "checkpoint_best.pt", state)
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    geometry = make_geometry((12, 10), (0.7, 2.0), (5.0, -3.0), (0.0, 1.0, 1.0, 0.0))
    for name in ("p1", "p2"):
        write_image(
            images / f"{name}_0000.nii.gz", rng.normal(size=(12, 10)).astype(np.float32), geometry
        )
    return spec, images


def test_predict_writes_one_label_map_per_case(tmp_path: Path) -> None:
    spec, images = setup(tmp_path)
    out = tmp_path / "pred"
    args = ["predict", str(spec), "--input", str(images), "--output", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--probabilities", "--set", "inference.overlap=0.25"])
    assert result.exit_code == 0, result.output
    assert "predicted 2 case(s)" in result.output and "checkpoint_best.pt" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["p1.nii.gz", "p1_probabilities.npz", "p2.nii.gz", "p2_probabilities.npz"]
    assert read_geometry(out / "p1.nii.gz") == read_geometry(images / "p1_0000.nii.gz")
    for name in ("p1", "p2"):  # the label map is the argmax of the probabilities written
        probabilities = np.load(out / f"{name}_probabilities.npz")
        probs = probabilities[probabilities.files[0]]
        assert probs.shape[0] == 2 and np.allclose(probs.sum(0), 1, atol=1e-5)
        np.testing.assert_array_equal(read_label(out / f"{name}.nii.gz")[0], probs.argmax(0))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "skipped 2 already there" in again.output


def test_mismatched_checkpoint_exits_1_naming_file_and_key(tmp_path: Path) -> None:
    spec, images = setup(tmp_path)
    out = tmp_path / "pred"
    result = runner.invoke(
        app, ["predict", str(spec), "-i", str(images), "-o", str(out), "--set", "model.filters=5"]
    )
    assert result.exit_code == 1
    assert "checkpoint_best.pt" in result.output and "model.filters" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_a_failed_case_exits_1_while_the_others_are_written(tmp_path: Path) -> None:
    spec, images = setup(tmp_path)
    (images / "p3_0000.nii.gz").write_bytes(b"\x00" * 40)
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(spec), "-i", str(images), "-o", str(out)])
    assert result.exit_code == 1
    assert "1 case(s) failed" in result.output and "p3_0000.nii.gz" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["p1.nii.gz", "p2.nii.gz"]


def test_missing_checkpoint_and_input_exit_1(tmp_path: Path) -> None:
    spec, images = setup(tmp_path)
    missing = runner.invoke(
        app,
        [
            "predict",
            str(spec),
            "-i",
            str(images),
            "-o",
            str(tmp_path / "o"),
            "--checkpoint",
            str(tmp_path / "nope.pt"),
        ],
    )
    assert missing.exit_code == 1 and "nope.pt: checkpoint not found" in missing.output
    no_input = runner.invoke(app, ["predict", str(spec), "-i", str(tmp_path / "x"), "-o", "o"])
    assert no_input.exit_code == 1 and "input not found" in no_input.output


def test_a_trained_model_predicts_the_lesions(tmp_path: Path) -> None:
    """A short real training (every lesion labelled: a bright 3×3 blob in noise), then predict
    and Dice against the references of unseen cases: a model that predicts nothing (or
    everything) fails this."""
    from segcli.data.synth import generate, write_dataset

    write_dataset(tmp_path / "train", generate(24, dims=2, seed=0, malign_fraction=1.0))
    write_dataset(tmp_path / "test", generate(6, dims=2, seed=1, malign_fraction=1.0))
    raw = {
        "name": "lesions",
        "seed": 0,
        "data": {
            "root": str(tmp_path / "train"),
            "patch_size": [32, 32],
            "val_fraction": 0,
            "normalization": "none",
            "foreground_fraction": 0.5,
        },
        "model": {"arch": "dilated", "dims": 2, "filters": 8, "dilations": [1, 2, 4]},
        "loss": {"name": "dice_ce"},
        "train": {
            "epochs": 12,
            "iterations_per_epoch": 20,
            "batch_size": 32,
            "optimizer": "adamw",
            "lr": 0.01,
            "workers": 0,
        },
        "inference": {"batch_size": 16},
        "output": str(tmp_path / "runs"),
    }
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(raw))
    trained = runner.invoke(app, ["train", str(spec), "--device", "cpu", "--quiet"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "pred"
    images = tmp_path / "test" / "imagesTr"
    predicted = runner.invoke(
        app, ["predict", str(spec), "-i", str(images), "-o", str(out), "--device", "cpu"]
    )
    assert predicted.exit_code == 0, predicted.output
    dices = []
    for reference in sorted((tmp_path / "test" / "labelsTr").glob("*.nii.gz")):
        ref = read_label(reference)[0] == 1
        pred = read_label(out / reference.name)[0] == 1
        assert ref.any()
        dices.append(2 * (ref & pred).sum() / (ref.sum() + pred.sum()))
    assert len(dices) == 6 and np.mean(dices) > 0.8, dices
