"""``segcli study``: variants on the same folds, ranked and compared with Holm's correction."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.report.browser import find_chromium, open_page
from segcli.study.compare import compare_pairs, holm, rank

runner = CliRunner()


def base_spec(tmp_path: Path, root: Path, name: str = "base.yaml", **model) -> Path:
    spec = {
        "name": "toy",
        "seed": 0,
        "data": {"root": str(root), "patch_size": [32, 32]},
        "model": {"arch": "cnn", "dims": 2, "filters": 2, **model},
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0},
        "evaluation": {"metrics": ["dice", "hd95"]},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_holm_by_hand() -> None:
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.06, 0.04·1) = 0.06
    got = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(got[4])


def test_rank_follows_the_metric_direction_and_pairs_name_the_better() -> None:
    cases = [f"c{i}" for i in range(12)]
    scores = {
        "good": {c: {"1": {"dice": 0.9 + 0.001 * i, "hd95": 1.0}} for i, c in enumerate(cases)},
        "bad": {c: {"1": {"dice": 0.5 + 0.002 * i, "hd95": 5.0}} for i, c in enumerate(cases)},
    }
    assert [r.variant for r in rank(scores, "dice")] == ["good", "bad"]
    assert [r.variant for r in rank(scores, "hd95")] == ["good", "bad"]  # lower is better
    (pair,) = compare_pairs(scores, "dice", ["good", "bad"])
    assert pair.significant and pair.better == "good"
    same = {"a": scores["good"], "b": scores["good"]}
    (tie,) = compare_pairs(same, "dice")
    assert not tie.significant and tie.better is None


def test_study_end_to_end(tmp_path: Path, toy2d: Path) -> None:
    base = base_spec(tmp_path, toy2d)
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump({"base": base.name, "vary": {"model.arch": ["cnn", "dilated"]}, "folds": 2})
    )
    out = tmp_path / "out"
    done = runner.invoke(app, ["study", str(study), "-o", str(out), "--set", "train.epochs=1"])
    assert done.exit_code == 0, done.output
    with (out / "study.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:4] == ["variant", "fold", "case", "label"]
    assert {r["variant"] for r in rows} == {"model.arch=cnn", "model.arch=dilated"}
    cases = {p.name.split("_0000")[0] for p in (toy2d / "imagesTr").iterdir()}
    for variant in ("model.arch=cnn", "model.arch=dilated"):
        assert {r["case"] for r in rows if r["variant"] == variant} == cases
    # both variants held out each case in the same fold
    fold = {(r["variant"], r["case"]): r["fold"] for r in rows}
    assert all(fold[("model.arch=cnn", c)] == fold[("model.arch=dilated", c)] for c in cases)
    with (out / "ranking.csv").open() as handle:
        ranking = list(csv.DictReader(handle))
    assert [r["rank"] for r in ranking] == ["1", "2"]
    html = (out / "study.html").read_text()
    assert 'id="ranking"' in html and 'id="pairs"' in html and "Holm" in html
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["arch"] == ranking[0]["variant"].split("=")[1]
    assert best["data"]["folds"] == 2
    pred = runner.invoke(
        app,
        [
            "predict",
            str(out / "best.yaml"),
            "-i",
            str(toy2d / "imagesTr"),
            "-o",
            str(tmp_path / "p"),
        ],
    )
    assert pred.exit_code == 0 and "ensemble of 2 fold model(s)" in pred.output, pred.output
    # the top two together, every case from the fold that held it out: chosen when higher
    with (out / "ensemble_oof.csv").open() as handle:
        oof = list(csv.DictReader(handle))
    assert {r["case"] for r in oof} == cases
    per_case: dict[str, list[float]] = {}
    for r in oof:
        if r["dice"] != "":
            per_case.setdefault(r["case"], []).append(float(r["dice"]))
    together = sum(sum(v) / len(v) for v in per_case.values()) / len(per_case)
    alone = float(ranking[0]["mean_dice"])
    others = [p for p in (out / "runs").iterdir() if p.name != best["name"]]
    assert len(others) == 1
    assert best["ensemble"] == ([str(others[0])] if together > alone else [])
    assert f"{together:.4f}" in done.output and "ensemble of the top two" in done.output
    # best.yaml with the runner-up in ensemble: predict averages both variants' folds
    best["ensemble"] = [str(others[0])]
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(best))
    both = runner.invoke(app, ["predict", str(tmp_path / "both.yaml"), "-i",
                               str(toy2d / "imagesTr"), "-o", str(tmp_path / "p2")])  # fmt: skip
    assert both.exit_code == 0, both.output
    assert f"ensemble member {others[0]}: 2 model(s)" in both.output
    # again: resumes, nothing retrained
    logs = sorted((out / "runs").rglob("log.csv"))
    before = [p.read_text() for p in logs]
    again = runner.invoke(app, ["study", str(study), "-o", str(out), "--set", "train.epochs=1"])
    assert again.exit_code == 0, again.output
    assert [p.read_text() for p in logs] == before
    if find_chromium() is not None:
        page = open_page(out / "study.html")
        assert page.console == [] and page.probe["errors"] == []


def test_two_variants_with_one_name_exit_1(tmp_path: Path, toy2d: Path) -> None:
    base_spec(tmp_path, toy2d)
    study = tmp_path / "dup.yaml"
    study.write_text("variants:\n  a: base.yaml\n  a: base.yaml\nfolds: 2\n")
    done = runner.invoke(app, ["study", str(study), "-o", str(tmp_path / "o")])
    assert done.exit_code == 1 and "'a' is given twice" in done.output
    assert "Traceback" not in done.output and not (tmp_path / "o").exists()


def test_variants_with_other_labels_or_data_exit_1(
    tmp_path: Path, toy2d: Path, toy3d: Path
) -> None:
    base_spec(tmp_path, toy2d, "a.yaml")
    base_spec(tmp_path, toy2d, "b.yaml", classes=3)
    study = tmp_path / "labels.yaml"
    study.write_text("variants: {a: a.yaml, b: b.yaml}\nfolds: 2\n")
    done = runner.invoke(app, ["study", str(study), "-o", str(tmp_path / "o")])
    assert done.exit_code == 1 and "differ in their labels" in done.output
    base_spec(tmp_path, toy3d, "c.yaml")
    study.write_text("variants: {a: a.yaml, c: c.yaml}\nfolds: 2\n")
    done = runner.invoke(app, ["study", str(study), "-o", str(tmp_path / "o")])
    assert done.exit_code == 1 and "data.root" in done.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("folds: 2\n", "either variants"),
        ("base: base.yaml\nvariants: {a: base.yaml, b: base.yaml}\n", "base: goes with vary"),
        ("variants: {a: base.yaml, b: base.yaml}\nfolds: 1\n", "folds"),
        ("variants: {a: base.yaml, b: base.yaml}\nmetric: dise\n", "metric 'dise'"),
        ("variants: {a: base.yaml, b: nope.yaml}\n", "nope.yaml"),
    ],
)
def test_bad_study_files_name_the_key(tmp_path: Path, toy2d: Path, text: str, message: str) -> None:
    base_spec(tmp_path, toy2d)
    study = tmp_path / "bad.yaml"
    study.write_text(text)
    done = runner.invoke(app, ["study", str(study), "-o", str(tmp_path / "o")])
    assert done.exit_code == 1 and message in done.output, done.output


def test_budget_is_split_evenly_and_sizes_each_variant_by_its_step_time(
    tmp_path: Path, toy2d: Path, monkeypatch
) -> None:
    """Each variant × fold run gets budget / runs; a variant with slower steps gets fewer."""
    from segcli.engine import plan as plan_engine
    from segcli.engine import study as study_engine
    from segcli.plan.budget import Measurement, size_schedule
    from segcli.study.design import load_study

    base_spec(tmp_path, toy2d)
    study = tmp_path / "s.yaml"
    study.write_text(
        yaml.safe_dump({"base": "base.yaml", "vary": {"model.filters": [2, 4]}, "folds": 2})
    )
    step = {2: 0.01, 4: 0.04}

    def fake_measure(spec, fp, device, startup, *rest):
        return Measurement(step[spec["model"]["filters"]], 0.01, 0.0, 1.0, 0.0)

    monkeypatch.setattr(plan_engine, "measure_spec", fake_measure)
    monkeypatch.setattr(plan_engine, "_startup_seconds", lambda: 1.0)
    loaded = load_study(study)
    sized = study_engine._fit_budget(loaded, 2.0, "cpu", tmp_path)
    n = len(list((toy2d / "labelsTr").iterdir()))
    for v in sized.variants:
        m = Measurement(step[v.exp.model.filters], 0.01, 0.0, 1.0, 0.0)
        want = size_schedule(m, 2.0 * 60 / 4, n - round(n / 2), round(n / 2))
        assert (v.exp.train.epochs, v.exp.train.iterations_per_epoch) == (
            want.epochs,
            want.iterations_per_epoch,
        )
    a, b = (v.exp.train.epochs * v.exp.train.iterations_per_epoch for v in sized.variants)
    assert a > b  # the cheaper steps buy more of them
    too_small = runner.invoke(
        app, ["study", str(study), "-o", str(tmp_path / "o"), "--budget-minutes", "0.01"]
    )
    assert too_small.exit_code == 1 and "--budget-minutes" in too_small.output


def test_the_ensemble_beats_the_winner_in_the_metrics_direction() -> None:
    from segcli.engine.study import _beats
    from segcli.study.compare import RankRow

    def row(mean: float) -> RankRow:
        return RankRow("v", 1, mean, 0.0, 10)

    assert _beats(row(0.91), row(0.90), "dice") and not _beats(row(0.89), row(0.90), "dice")
    assert _beats(row(2.0), row(3.0), "hd95") and not _beats(row(4.0), row(3.0), "hd95")
    assert not _beats(row(0.90), row(0.90), "dice")  # a tie keeps the single winner
    assert not _beats(row(math.nan), row(0.90), "dice")
