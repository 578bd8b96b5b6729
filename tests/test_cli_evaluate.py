"""``segcli evaluate`` end to end on tiny NIfTI folders, and its error paths (exit 1, no output)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.io.images import make_geometry, write_image

runner = CliRunner()


def _write(path: Path, array: np.ndarray, spacing=(1.0, 0.5, 0.5), **geometry) -> None:
    write_image(path, array, make_geometry(array.shape, spacing, **geometry))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Three 3D cases; case_002's lesion (label 2) is missed by the prediction."""
    for i in range(3):
        ref = np.zeros((5, 12, 12), np.uint8)
        ref[1:4, 2:8, 2 + i : 9] = 1
        ref[2, 9:11, 9:11] = 2
        pred = np.roll(ref, 1, axis=1)
        if i == 2:
            pred[pred == 2] = 0
        _write(tmp_path / "ref" / f"case_{i:03d}.nii.gz", ref)
        _write(tmp_path / "pred" / f"case_{i:03d}.nii.gz", pred)
        _write(tmp_path / "img" / f"case_{i:03d}_0000.nii.gz", ref.astype(np.float32) * 100 + 5)
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _evaluate(data: Path, *extra: str):
    args = ["evaluate", "--pred", str(data / "pred"), "--ref", str(data / "ref")]
    return runner.invoke(
        app, [*args, "--output", str(data / "out" / "m.csv"), "--workers", "1", *extra]
    )


def test_end_to_end_csv_summary_overlays_and_console(data: Path) -> None:
    result = _evaluate(
        data,
        "--metrics",
        "dice,hd95,nsd",
        "--overlays",
        str(data / "ov"),
        "--images",
        str(data / "img"),
    )
    assert result.exit_code == 0, result.output
    rows = _rows(data / "out" / "m.csv")
    assert list(rows[0]) == ["case", "label", "dice", "hd95", "nsd"]
    assert [(r["case"], r["label"]) for r in rows] == [
        (f"case_{i:03d}", label) for i in range(3) for label in ("1", "2")
    ]
    assert rows[0]["hd95"] == "0.5"  # moved by one voxel of 0.5 mm
    missed = rows[-1]
    assert (missed["dice"], missed["hd95"], missed["nsd"]) == ("0", "", "0")
    summary = _rows(data / "out" / "m_summary.csv")
    assert list(summary[0]) == [
        "label",
        "metric",
        "mean",
        "std",
        "median",
        "min",
        "max",
        "n",
        "n_nan",
    ]
    lesion_hd95 = next(r for r in summary if (r["label"], r["metric"]) == ("2", "hd95"))
    assert (lesion_hd95["n"], lesion_hd95["n_nan"]) == ("2", "1")
    assert sorted(p.name for p in (data / "ov").iterdir()) == [
        f"case_{i:03d}.png" for i in range(3)
    ]
    output = " ".join(result.output.split())  # undo console line wrapping
    assert "label 2: 1 missed (reference present, prediction empty) in 3 cases" in output
    assert "left out of the means of hd95 (1)" in output


def test_quiet_prints_nothing_but_writes(data: Path) -> None:
    args = ["evaluate", "--pred", str(data / "pred"), "--ref", str(data / "ref")]
    result = runner.invoke(
        app, ["--quiet", *args, "--output", str(data / "m.csv"), "--workers", "1"]
    )
    assert result.exit_code == 0 and result.output == ""
    assert list(_rows(data / "m.csv")[0]) == ["case", "label", "dice", "iou", "hd95", "assd", "nsd"]


def test_spec_evaluation_section_and_option_override(data: Path) -> None:
    spec = {
        "name": "tiny",
        "data": {"root": str(data), "patch_size": [16, 16]},
        "model": {"arch": "cnn", "dims": 2},
        "evaluation": {"metrics": ["masd", "hd"], "labels": [2], "nsd_tolerance": 0.1},
    }
    path = data / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    from_spec = _evaluate(data, str(path))
    assert from_spec.exit_code == 0, from_spec.output
    rows = _rows(data / "out" / "m.csv")
    assert list(rows[0]) == ["case", "label", "masd", "hd"] and {r["label"] for r in rows} == {"2"}
    overridden = _evaluate(
        data, str(path), "--metrics", "nsd", "--labels", "1", "--nsd-tolerance", "0.5"
    )
    assert overridden.exit_code == 0, overridden.output
    rows = _rows(data / "out" / "m.csv")
    assert list(rows[0]) == ["case", "label", "nsd"] and {r["label"] for r in rows} == {"1"}
    assert all(r["nsd"] == "1" for r in rows)  # every boundary voxel within 0.5 mm
    with_set = _evaluate(
        data, str(path), "--set", "evaluation.nsd_tolerance=0.0", "--metrics", "nsd"
    )
    assert with_set.exit_code == 0, with_set.output
    assert all(float(r["nsd"]) < 1 for r in _rows(data / "out" / "m.csv"))


def _assert_failed(result, *needles: str, data: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output
    assert not (data / "out").exists()


def test_missing_partner(data: Path) -> None:
    (data / "ref" / "case_001.nii.gz").unlink()
    _assert_failed(_evaluate(data), "case 'case_001'", "no reference", data=data)


def test_geometry_mismatch(data: Path) -> None:
    _write(
        data / "pred" / "case_002.nii.gz", np.zeros((5, 12, 12), np.uint8), spacing=(1.0, 0.5, 0.75)
    )
    _assert_failed(_evaluate(data), "case 'case_002'", "spacing", data=data)


def test_float_labels(data: Path) -> None:
    _write(data / "pred" / "case_001.nii.gz", np.full((5, 12, 12), 1.5, np.float32))
    _assert_failed(_evaluate(data), "case 'case_001'", "non-integer", data=data)


def test_negative_labels(data: Path) -> None:
    _write(data / "ref" / "case_000.nii.gz", np.full((5, 12, 12), -1, np.int16))
    _assert_failed(_evaluate(data), "case 'case_000'", "negative", data=data)


def test_unknown_metric_and_bad_labels(data: Path) -> None:
    _assert_failed(_evaluate(data, "--metrics", "dice,hd59"), "did you mean 'hd95'", data=data)
    _assert_failed(_evaluate(data, "--labels", "1,x"), "--labels", data=data)


def test_a_stray_prediction_label_is_reported_with_its_cases_and_volume(data: Path) -> None:
    """--labels 1,2 and a stray 7 in one prediction: a warning naming the case and its volume,
    rows for label 7 in the CSV (a false alarm: dice 0, vol_pred its volume), no summary row."""
    from segcli.io.images import read_label

    pred, geometry = read_label(data / "pred" / "case_001.nii.gz")
    pred[0, 0:2, 0:4] = 7  # 8 voxels of 1 × 0.5 × 0.5 mm = 2 mm³
    write_image(data / "pred" / "case_001.nii.gz", pred, geometry)
    result = _evaluate(data, "--labels", "1,2", "--metrics", "dice,vol_pred")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "label 7 is not among the labels scored (1, 2)" in text
    assert "1 case(s): case_001 (8 voxels / 0.002 mL predicted)" in text
    rows = _rows(data / "out" / "m.csv")
    stray = [r for r in rows if r["label"] == "7"]
    assert stray == [{"case": "case_001", "label": "7", "dice": "0", "vol_pred": "0.002"}]
    assert [r["label"] for r in rows if r["case"] == "case_001"] == ["1", "2", "7"]
    summary = _rows(data / "out" / "m_summary.csv")
    assert {r["label"] for r in summary} == {"1", "2"}
    # without --labels every value found is scored: 7 is an ordinary label, no warning
    result = _evaluate(data, "--metrics", "dice")
    assert result.exit_code == 0 and "not among the labels scored" not in result.output
    assert {r["label"] for r in _rows(data / "out" / "m_summary.csv")} == {"1", "2", "7"}
