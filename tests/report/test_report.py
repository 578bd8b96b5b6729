"""``segcli report`` end to end: every number equals the CSV, overlays, gaps, pitfalls, errors."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from segcli.cli import app
from segcli.io.images import write_image
from segcli.report import load_run, stats
from segcli.report.build import select_cases
from segcli.report.page import fmt

from .conftest import METRICS, evaluate, make_cases, parse, runner


def _csv(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    with path.open(newline="") as handle:
        return {
            (row["case"], int(row["label"])): {
                k: (float(v) if v != "" else math.nan)
                for k, v in row.items()
                if k not in ("case", "label")
            }
            for row in csv.DictReader(handle)
        }


def _value(cell: tuple[str, dict[str, str | None]]) -> float:
    exact = cell[1]["data-v"]
    return math.nan if exact == "" else float(exact)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_every_case_table_number_equals_the_csv(evaluated: Path) -> None:
    values = _csv(evaluated / "a.csv")
    html = parse(evaluated / "a.html")
    header, *rows = html.tables["cases"]
    cases = sorted({case for case, _ in values})
    assert [row[0][0] for row in rows] == cases  # one row per case, CSV order
    columns = [h[0] for h in header[1:]]
    assert len(columns) == 2 * 8
    for row in rows:
        for name, cell in zip(columns, row[1:], strict=True):
            label, metric = int(name.split()[0][1:]), name.split()[1]
            expected = values[(row[0][0], label)][metric]
            assert _same(_value(cell), expected), (row[0][0], name)
            assert cell[0] == fmt(expected)  # the text is the rounded CSV value
    assert html.scripts_external == 0  # self-contained


def test_summary_statistics_equal_the_csv_columns(evaluated: Path) -> None:
    values = _csv(evaluated / "a.csv")
    _, *rows = parse(evaluated / "a.html").tables["summary"]
    assert len(rows) == 2 * 8
    for row in rows:
        label, metric = int(row[0][0].split()[1]), row[1][0]
        column = np.array([v[metric] for (c, lbl), v in values.items() if lbl == label])
        finite = column[~np.isnan(column)]
        cells = [_value(c) for c in row[2:8]]
        mean, median, std, iqr, q1, q3 = cells
        assert mean == pytest.approx(finite.mean())
        assert median == pytest.approx(np.median(finite))
        assert std == pytest.approx(finite.std(ddof=1), nan_ok=True)
        assert (q1, q3) == pytest.approx(tuple(np.percentile(finite, [25, 75])))
        lo, hi = float(row[8][1]["data-lo"] or "nan"), float(row[8][1]["data-hi"] or "nan")
        assert (lo, hi) == pytest.approx(stats.bootstrap_ci(finite))
        assert (_value(row[9]), _value(row[10])) == (finite.size, column.size - finite.size)
    missed = [r for r in rows if r[0][0] == "label 2" and r[1][0] == "hd95"]
    assert missed[0][11][0] == "1 missed"  # case_02's label 2: why its hd95 is left out


def test_report_states_provenance_and_the_pitfalls(evaluated: Path) -> None:
    text = (evaluated / "a.html").read_text()
    html = parse(evaluated / "a.html")
    provenance = {row[0][0]: row[1][0] for row in html.tables["provenance"]}
    assert provenance["cases"] == "8"
    assert provenance["predictions"] == str((evaluated / "predA").resolve())
    assert provenance["images"] == str((evaluated / "img").resolve())
    assert "segcli 0.1.0" in provenance["produced by"]
    assert "1 of 8 cases have label 2 in neither" in text  # case_04, scored as perfect
    assert "hd95 left out for 1 case(s)" in text and "1 missed" in text
    assert "label 7 predicted but in no reference" in text and "case_01" in text
    assert "holes in 1 prediction(s)" in text
    assert "good Dice, bad HD95" in text and "case_03" in text
    assert "extra components in" in text


def test_overlays_of_percentile_and_worst_cases(evaluated: Path) -> None:
    run = load_run(evaluated / "a.csv")
    chosen = select_cases(run, worst=2)
    dice2 = {c: run.values[c][2]["dice"] for c in run.cases}
    worst2 = sorted(dice2, key=lambda c: (dice2[c], c))[:2]
    assert worst2[0] == "case_02"  # label 2 missed
    assert all(any("label 2: worst" in why for why in chosen[c]) for c in worst2)
    median_case = sorted(dice2, key=lambda c: (dice2[c], c))[round(0.5 * 7)]
    assert "label 2: 50th percentile of dice" in chosen[median_case]
    html = parse(evaluated / "a.html")
    assert html.images == len(select_cases(run, worst=5))
    assert not html.gaps


def test_report_without_sidecar_states_the_gap_and_flags_fill_it(
    evaluated: Path, tmp_path: Path
) -> None:
    shutil.copy(evaluated / "b.csv", tmp_path / "b.csv")  # no b_meta.json beside it
    out = tmp_path / "b.html"
    result = runner.invoke(app, ["report", str(tmp_path / "b.csv"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    html = parse(out)
    assert html.images == 0 and html.gaps
    assert all("label map folders unknown" in gap for gap in html.gaps)
    assert "not checked: holes and stray labels" in out.read_text()
    result = runner.invoke(
        app,
        [
            "report",
            str(tmp_path / "b.csv"),
            "-o",
            str(out),
            "-q",
            "--pred",
            str(evaluated / "predB"),
            "--ref",
            str(evaluated / "ref"),
            "--worst",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    html = parse(out)
    assert html.images > 0 and all("no image folder" in gap for gap in html.gaps)


def test_a_missing_image_is_stated_in_place_and_the_report_still_writes(
    evaluated: Path, tmp_path: Path
) -> None:
    images = tmp_path / "img"
    shutil.copytree(evaluated / "img", images)
    (images / "case_02_0000.nii.gz").unlink()
    out = tmp_path / "r.html"
    result = runner.invoke(
        app, ["report", str(evaluated / "a.csv"), "-o", str(out), "--images", str(images), "-q"]
    )
    assert result.exit_code == 0, result.output
    gaps = parse(out).gaps
    assert len(gaps) == 1 and "image missing" in gaps[0]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("epoch,train_loss\n1,0.5\n", "header is 'epoch,train_loss'"),
        ("case,label,dice,banana\nx,1,0.5,1\n", "unknown metric column 'banana'"),
        ("case,label,dice\nx,0,0.5\n", "label '0' is not an integer >= 1"),
        ("case,label,dice\nx,1,high\n", "'high' is not a number"),
        ("case,label,dice\n", "no data rows"),
    ],
)
def test_not_an_evaluate_csv_exits_1_and_writes_nothing(
    tmp_path: Path, content: str, why: str
) -> None:
    bad = tmp_path / "log.csv"
    bad.write_text(content)
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(bad), "-o", str(out)])
    assert result.exit_code == 1
    assert "not a segcli evaluate CSV" in result.output and why in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_comparison_paired_numbers_equal_the_csvs(evaluated: Path) -> None:
    out = evaluated / "ab.html"
    result = runner.invoke(
        app,
        [
            "report",
            str(evaluated / "a.csv"),
            str(evaluated / "b.csv"),
            "-o",
            str(out),
            "--names",
            "A,B",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    a, b = _csv(evaluated / "a.csv"), _csv(evaluated / "b.csv")
    html = parse(out)
    _, *rows = html.tables["comparison-B"]
    assert len(rows) == 2 * 8
    for row in rows:
        label, metric = int(row[0][0].split()[1]), row[1][0]
        pairs = np.array([(a[k][metric], b[k][metric]) for k in sorted(a) if k[1] == label])
        keep = ~np.isnan(pairs).any(axis=1)
        diff = pairs[keep, 1] - pairs[keep, 0]
        assert _value(row[2]) == pytest.approx(pairs[keep, 0].mean())
        assert _value(row[3]) == pytest.approx(pairs[keep, 1].mean())
        assert _value(row[4]) == pytest.approx(diff.mean())
        way = stats.direction(metric)
        if way != "none":
            better = diff > 1e-12 if way == "higher" else diff < -1e-12
            ties = np.abs(diff) <= 1e-12
            assert (_value(row[7]), _value(row[8]), _value(row[9])) == (
                better.sum(),
                ties.sum(),
                (~better & ~ties).sum(),
            )
        lo, hi = float(row[5][1]["data-lo"] or "nan"), float(row[5][1]["data-hi"] or "nan")
        if not math.isnan(lo) and lo <= 0 <= hi:
            assert row[11][0] == "no significant difference"
    assert html.images == 2 * 5  # both predictions of the five cases that changed most
    assert len(html.tables["cases"]) == 1 + 8


def test_comparison_of_different_case_sets_names_the_first_missing_case(
    evaluated: Path, tmp_path: Path
) -> None:
    lines = (evaluated / "b.csv").read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(line for line in lines if not line.startswith("case_03")) + "\n")
    out = tmp_path / "c.html"
    result = runner.invoke(app, ["report", str(evaluated / "a.csv"), str(short), "-o", str(out)])
    assert result.exit_code == 1
    assert "case 'case_03' is in" in result.output and "not in" in result.output
    assert not out.exists()


def test_names_must_match_the_csvs(evaluated: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "report",
            str(evaluated / "a.csv"),
            str(evaluated / "b.csv"),
            "-o",
            str(tmp_path / "x.html"),
            "--names",
            "only-one",
        ],
    )
    assert result.exit_code == 1 and "--names: 1 given for 2 CSV(s)" in result.output


def test_evaluate_images_without_overlays_or_report_is_refused(tmp_path: Path) -> None:
    root = make_cases(tmp_path, count=2)
    result = evaluate(root, "predA", "m.csv", "--images", str(root / "img"))
    assert result.exit_code == 1 and "--report FILE.html" in result.output


def test_runs_with_different_metrics_are_compared_on_the_shared_ones(tmp_path: Path) -> None:
    """B's CSV has no dice column: the comparison uses hd95, the only shared metric, and says
    on the page and the console that dice and nsd were left out (it used to raise KeyError)."""
    rows = [("c1", 1), ("c2", 1), ("c3", 1)]
    for name, metrics in (("a", ["dice", "hd95"]), ("b", ["hd95", "nsd"])):
        with (tmp_path / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "label", *metrics])
            for i, (case, label) in enumerate(rows):
                values = {"dice": 0.8 + 0.01 * i, "hd95": 2.0 + i + (name == "b"), "nsd": 0.9}
                writer.writerow([case, label, *(values[m] for m in metrics)])
    done = runner.invoke(
        app,
        [
            "report",
            str(tmp_path / "a.csv"),
            str(tmp_path / "b.csv"),
            "-o",
            str(tmp_path / "r.html"),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "left out of the comparison" in done.output and "dice, nsd" in done.output
    html = (tmp_path / "r.html").read_text()
    assert "by hd95" in html and "left out" in html and "dice, nsd" in html


def test_three_runs_are_each_compared_with_the_first(evaluated: Path) -> None:
    # a third run, C, predicting the reference exactly: its table is against A, not B
    from segcli.io.images import read_label

    for ref in sorted((evaluated / "ref").iterdir()):
        label, geometry = read_label(ref)
        write_image(evaluated / "predC" / ref.name, label, geometry)
    done = runner.invoke(app, ["evaluate", "--pred", str(evaluated / "predC"), "--ref",
                               str(evaluated / "ref"), "--output", str(evaluated / "c.csv"),
                               "--workers", "1", "--metrics", METRICS, "--labels", "1,2",
                               "--quiet"])  # fmt: skip
    assert done.exit_code == 0, done.output
    out = evaluated / "abc.html"
    names = ("A", "B", "C")
    result = runner.invoke(app, ["report", *(str(evaluated / f"{n.lower()}.csv") for n in names),
                                 "-o", str(out), "--names", ",".join(names), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    html = parse(out)
    assert "comparison-A" not in html.tables
    a = _csv(evaluated / "a.csv")
    for name in ("B", "C"):
        other = _csv(evaluated / f"{name.lower()}.csv")
        _, *rows = html.tables[f"comparison-{name}"]
        assert len(rows) == 2 * 8
        for row in rows:
            label, metric = int(row[0][0].split()[1]), row[1][0]
            keys = [k for k in sorted(a) if k[1] == label]
            pairs = np.array([(a[k][metric], other[k][metric]) for k in keys])
            keep = ~np.isnan(pairs).any(axis=1)
            assert _value(row[2]) == pytest.approx(pairs[keep, 0].mean())  # A, the baseline
            assert _value(row[3]) == pytest.approx(pairs[keep, 1].mean())
    _, *c_rows = html.tables["comparison-C"]
    dice = {int(r[0][0].split()[1]): _value(r[3]) for r in c_rows if r[1][0] == "dice"}
    assert dice == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}  # C is the reference
    header, *cases = html.tables["cases"]
    assert len(cases) == 8 and all(any(n in cell[0] for cell in header) for n in names)
