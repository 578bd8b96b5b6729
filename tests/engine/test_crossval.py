"""Cross-validation end to end on a tiny toy dataset: folds, out-of-fold scores, ensembles."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from segcli.cli import app

runner = CliRunner()


@pytest.fixture
def cv_spec(tmp_path: Path, toy2d: Path) -> Path:
    spec = {
        "name": "cv",
        "seed": 0,
        "data": {"root": str(toy2d), "patch_size": [32, 32], "folds": 3},
        "model": {"arch": "cnn", "dims": 2, "filters": 2, "layers": 2},
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0},
        "evaluation": {"metrics": ["dice", "hd95"]},
        "output": str(tmp_path / "runs"),
    }
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_fold_all_trains_every_fold_and_scores_every_case_out_of_fold(
    cv_spec: Path, tmp_path: Path, toy2d: Path
) -> None:
    done = runner.invoke(app, ["train", str(cv_spec), "--fold", "all"])
    assert done.exit_code == 0, done.output
    cv = tmp_path / "runs" / "cv"
    vals = []
    for k in range(3):
        split = json.loads((cv / f"fold_{k}" / "split.json").read_text())
        vals.append(split["val"])
        assert yaml.safe_load((cv / f"fold_{k}" / "config.yaml").read_text())["data"]["fold"] == k
        assert (cv / f"fold_{k}" / "validation.csv").is_file()
    cases = sorted(p.name.split("_0000")[0] for p in (toy2d / "imagesTr").iterdir())
    assert sorted(sum(vals, [])) == cases  # the folds partition the dataset
    rows = read_rows(cv / "cv_metrics.csv")
    assert list(rows[0]) == ["case", "label", "dice", "hd95", "fold"]
    assert sorted({r["case"] for r in rows}) == cases
    for r in rows:
        assert r["case"] in vals[int(r["fold"])]
    spread = read_rows(cv / "cv_folds.csv")
    overall = [r for r in spread if r["fold"] == "all" and r["metric"] == "dice"]
    assert overall and all(r["std"] != "" for r in overall)
    # the report reads the out-of-fold CSV like any evaluate CSV
    page = tmp_path / "cv.html"
    assert (
        runner.invoke(app, ["report", str(cv / "cv_metrics.csv"), "-o", str(page)]).exit_code == 0
    )
    # again: every fold is done, nothing is retrained (the logs are unchanged)
    logs = [(cv / f"fold_{k}" / "log.csv").read_text() for k in range(3)]
    again = runner.invoke(app, ["train", str(cv_spec), "--fold", "all"])
    assert again.exit_code == 0, again.output
    assert [(cv / f"fold_{k}" / "log.csv").read_text() for k in range(3)] == logs
    # predict: the ensemble of the three folds by default, one fold with --fold
    out = tmp_path / "pred"
    ens = runner.invoke(
        app, ["predict", str(cv_spec), "-i", str(toy2d / "imagesTr"), "-o", str(out)]
    )
    assert ens.exit_code == 0, ens.output
    assert "ensemble of 3 fold model(s)" in ens.output
    one = runner.invoke(
        app,
        [
            "predict",
            str(cv_spec),
            "-i",
            str(toy2d / "imagesTr"),
            "-o",
            str(tmp_path / "p1"),
            "--fold",
            "1",
        ],
    )
    assert one.exit_code == 0, one.output
    assert "checkpoint_best.pt" in one.output and "ensemble" not in one.output


def test_a_fold_outside_the_range_exits_1_naming_the_option(cv_spec: Path) -> None:
    done = runner.invoke(app, ["train", str(cv_spec), "--fold", "3"])
    assert done.exit_code == 1
    assert "--fold 3" in done.output and "0..2" in done.output and "Traceback" not in done.output


def test_train_without_fold_on_a_cv_spec_says_how(cv_spec: Path) -> None:
    done = runner.invoke(app, ["train", str(cv_spec)])
    assert done.exit_code == 1 and "--fold" in done.output


def test_fold_without_folds_exits_1(tmp_path: Path, toy2d: Path) -> None:
    spec = {
        "name": "nocv",
        "data": {"root": str(toy2d), "patch_size": [32, 32]},
        "model": {"arch": "cnn", "dims": 2},
        "output": str(tmp_path / "runs"),
    }
    path = tmp_path / "nocv.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = runner.invoke(app, ["train", str(path), "--fold", "0"])
    assert done.exit_code == 1 and "data.folds" in done.output
