"""``train.init_from`` (segcli/engine/init_from.py): fine-tuning from another run's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import Experiment, from_dict
from segcli.engine.init_from import load_initial_weights, output_tensors
from segcli.engine.optim import build_optimizer
from segcli.engine.train import fit
from segcli.errors import CheckpointError
from segcli.io.checkpoint import Checkpoint
from segcli.models import build


def _exp(tmp_path: Path, model: dict[str, Any] | None = None, **train: Any) -> Experiment:
    """A seconds-long run on 6 synthetic 16×16 cases (``model`` replaces the dilated CNN)."""
    return from_dict(
        {
            "name": "fine",
            "seed": 0,
            "data": {
                "synthetic": {"dims": 2, "cases": 6, "size": 16, "lesion": 2, "ring_distance": 3},
                "patch_size": [16, 16],
            },
            "model": model or {"arch": "dilated", "dims": 2, "filters": 2, "dilations": [1, 2]},
            "train": {"epochs": 2, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0}
            | train,
            "output": str(tmp_path / "runs"),
        }
    )


def _unet(classes: int, filters: int = 2) -> dict[str, Any]:
    return {
        "arch": "unet",
        "dims": 2,
        "classes": classes,
        "filters": filters,
        "depth": 2,
        "deep_supervision": True,
    }


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: Any) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_the_weights_are_the_checkpoints_before_the_first_step(
    tmp_path: Path, make_checkpoint
) -> None:
    source = _exp(tmp_path)
    path, trained = make_checkpoint(source, tmp_path / "a.pt", seed=7)
    exp = _exp(tmp_path, init_from=str(path))
    torch.manual_seed(0)
    model = build(exp.model)
    assert not _states_equal(model.state_dict(), trained.state_dict(), ["head.weight"])
    report = load_initial_weights(model, exp)
    ours, theirs = model.state_dict(), trained.state_dict()
    assert _states_equal(ours, theirs, theirs) and report.reinitialised == []
    assert report.path == path and report.loaded == len(theirs)


def test_a_run_folder_means_its_best_checkpoint(tmp_path: Path, capsys) -> None:
    first = fit(_exp(tmp_path), device="cpu")
    best = Checkpoint.load(first.run_dir / "checkpoint_best.pt").model
    # a learning rate so small that no step moves a weight visibly: the run ends where it began
    exp = _exp(tmp_path, init_from=str(first.run_dir), lr=1e-12, weight_decay=0.0)
    capsys.readouterr()
    second = fit(exp, run_dir=tmp_path / "second", device="cpu")
    out = capsys.readouterr().out
    assert f"initialised from {first.run_dir / 'checkpoint_best.pt'}" in out
    assert "warms up linearly over the first 1 epoch(s)" in out
    after = Checkpoint.load(second.run_dir / "checkpoint_last.pt").model
    for key, value in best.items():
        assert torch.allclose(after[key], value, atol=1e-6), key


def test_another_class_count_reinitialises_every_output_head_and_says_so(
    tmp_path: Path, make_checkpoint
) -> None:
    path, trained = make_checkpoint(_exp(tmp_path, _unet(classes=2)), tmp_path / "a.pt", seed=7)
    exp = _exp(tmp_path, _unet(classes=3), init_from=str(path))
    heads = output_tensors(exp.model)
    assert heads == {f"{m}.{p}" for m in ("head", "aux_heads.0") for p in ("weight", "bias")}
    torch.manual_seed(0)
    model = build(exp.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_initial_weights(model, exp)
    ours, theirs = model.state_dict(), trained.state_dict()
    assert report.reinitialised == ["head", "aux_heads.0"]
    assert _states_equal(ours, theirs, [k for k in ours if k not in heads])
    assert _states_equal(ours, fresh, heads)  # the heads keep the new network's initialisation
    line = report.describe(3)
    assert "trained for 2 classes and this network has 3" in line
    assert "output layer(s) head, aux_heads.0 re-initialised" in line


def test_a_layer_that_does_not_fit_is_named(tmp_path: Path, make_checkpoint) -> None:
    path, _ = make_checkpoint(_exp(tmp_path, _unet(classes=2, filters=4)), tmp_path / "a.pt")
    exp = _exp(tmp_path, _unet(classes=3, filters=2), init_from=str(path))
    with pytest.raises(CheckpointError) as err:
        load_initial_weights(build(exp.model), exp)
    text = str(err.value)
    assert text.startswith(f"{path}: cannot initialise from it: layer 'encoder.0.convs.0'")
    assert "weight: checkpoint [4, 1, 3, 3], network [2, 1, 3, 3]" in text
    assert "model.filters: checkpoint 4, spec 2" in text and "model.classes" not in text


def test_another_architecture_is_refused_naming_the_first_layer(
    tmp_path: Path, make_checkpoint
) -> None:
    path, _ = make_checkpoint(_exp(tmp_path), tmp_path / "dilated.pt")
    exp = _exp(tmp_path, _unet(classes=2), init_from=str(path))
    with pytest.raises(CheckpointError, match=r"layer 'encoder\.0\.convs\.0' \(weight \["):
        load_initial_weights(build(exp.model), exp)


def _write_spec(tmp_path: Path, exp: Experiment) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(exp.model_dump(mode="json")))
    return spec


def test_the_cli_exits_1_naming_the_checkpoint_and_the_layer(
    tmp_path: Path, make_checkpoint
) -> None:
    wider = {"arch": "dilated", "dims": 2, "filters": 3, "dilations": [1, 2]}
    path, _ = make_checkpoint(_exp(tmp_path, wider), tmp_path / "a.pt")
    spec = _write_spec(tmp_path, _exp(tmp_path, init_from=str(path)))
    result = CliRunner().invoke(app, ["train", str(spec)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert f"{path}: cannot initialise from it: layer 'blocks.0.0' does not fit" in text
    assert "(weight: checkpoint [3, 1, 3, 3], network [2, 1, 3, 3])" in text
    missing = tmp_path / "nowhere.pt"
    result = CliRunner().invoke(app, ["train", str(spec), "--set", f"train.init_from={missing}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{missing}: train.init_from names no checkpoint" in " ".join(result.output.split())


def test_fine_tuning_warms_up_by_default_and_old_specs_do_not(tmp_path: Path) -> None:
    assert _exp(tmp_path).train.warmup_epochs == 0
    exp = _exp(tmp_path, epochs=40, lr=0.01, init_from="x.pt")
    assert exp.train.warmup_epochs == 2  # 5% of 40 epochs
    assert _exp(tmp_path, init_from="x.pt", warmup_epochs=0).train.warmup_epochs == 0
    # the resolved spec (config.yaml) spells it out: a run resumed from it keeps the schedule
    assert from_dict(exp.model_dump(mode="json")).train.warmup_epochs == 2
    optimizer, scheduler = build_optimizer(exp, build(exp.model))
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01 * (1 - 1 / 76) ** 0.9])


def test_resume_continues_its_own_weights_without_the_init_checkpoint(
    tmp_path: Path, make_checkpoint, capsys
) -> None:
    path, _ = make_checkpoint(_exp(tmp_path), tmp_path / "a.pt", seed=7)
    run = tmp_path / "run"
    fit(_exp(tmp_path, epochs=1, init_from=str(path)), run_dir=run, device="cpu")
    first = Checkpoint.load(run / "checkpoint_last.pt").model
    path.unlink()  # resume must not need (or reload) the init_from checkpoint
    capsys.readouterr()
    longer = fit(
        _exp(tmp_path, epochs=2, init_from=str(path), warmup_epochs=1),
        run_dir=run,
        device="cpu",
        resume=True,
    )
    assert longer.epochs_run == 2
    assert "train.init_from" in capsys.readouterr().out
    # the resumed epoch started from epoch 0's weights: they moved on from there
    after = Checkpoint.load(run / "checkpoint_last.pt").model
    assert not all(torch.equal(after[k], first[k]) for k in first)
