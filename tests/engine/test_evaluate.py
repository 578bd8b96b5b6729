"""evaluate_folders: pairing, label discovery, CSVs, overlays, workers and all-or-nothing errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from segcli.engine.evaluate import evaluate_folders, overlay_slices
from segcli.errors import DataError, GeometryError, SpecError
from segcli.io.dataset import pair_cases
from segcli.io.images import make_geometry, write_image
from segcli.metrics import evaluate_case

SPACING = (2.0, 0.75, 0.5)  # exact in the float32 NIfTI header


def _write(folder: Path, name: str, array: np.ndarray, spacing=SPACING, **geometry) -> Path:
    return write_image(folder / name, array, make_geometry(array.shape, spacing, **geometry))


def _cases(rng: np.random.Generator, count: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reference: a box (label 1) and a small lesion (label 2); prediction: a perturbed copy."""
    out = {}
    for i in range(count):
        ref = np.zeros((6, 14, 12), np.uint8)
        ref[1:5, 3 + i : 10, 2:9] = 1
        ref[2:4, 11:13, 9:11] = 2
        pred = np.roll(ref, 1, axis=2)
        pred[rng.random(pred.shape) < 0.03] = 0
        if i == 1:
            pred[pred == 2] = 0  # the lesion is missed in one case
        out[f"case_{i:03d}"] = (pred, ref)
    return out


@pytest.fixture
def folders(tmp_path: Path, rng: np.random.Generator):
    cases = _cases(rng)
    for name, (pred, ref) in cases.items():
        _write(tmp_path / "pred", f"{name}.nii.gz", pred)
        _write(tmp_path / "ref", f"{name}.nii.gz", ref)
    return tmp_path / "pred", tmp_path / "ref", cases


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_values_equal_evaluate_case(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, cases = folders
    metrics = ["dice", "hd95", "masd", "lesion_fn", "vol_ref"]
    result = evaluate_folders(pred_dir, ref_dir, tmp_path / "out" / "m.csv", metrics, workers=1)
    rows = _read_csv(tmp_path / "out" / "m.csv")
    assert list(rows[0]) == ["case", "label", *metrics]
    assert [(r["case"], r["label"]) for r in rows] == [(c, str(k)) for c in cases for k in (1, 2)]
    for row in rows:
        pred, ref = cases[row["case"]]
        expected = evaluate_case(pred, ref, SPACING, metrics=metrics)[int(row["label"])]
        for name in metrics:
            if math.isnan(expected[name]):
                assert row[name] == ""
            else:
                assert float(row[name]) == pytest.approx(expected[name], rel=1e-12)
    assert result.summary_csv == tmp_path / "out" / "m_summary.csv"
    summary = {(r["label"], r["metric"]): r for r in _read_csv(result.summary_csv)}
    assert summary[("2", "hd95")]["n"] == "2" and summary[("2", "hd95")]["n_nan"] == "1"
    assert summary[("2", "dice")]["n"] == "3"
    assert result.statuses(2) == {"both": 2, "missed": 1, "false_alarm": 0, "absent": 0}


def test_workers_give_the_same_result(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = folders
    one = evaluate_folders(pred_dir, ref_dir, tmp_path / "a.csv", ["dice", "hd"], workers=1)
    two = evaluate_folders(pred_dir, ref_dir, tmp_path / "b.csv", ["dice", "hd"], workers=2)
    assert repr(one.values) == repr(two.values)  # NaN-aware equality
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_labels_from_dataset_json_then_all_found(tmp_path: Path) -> None:
    ref = np.zeros((8, 8), np.uint8)
    ref[1:3, 1:3] = 1
    pred = np.zeros_like(ref)
    pred[5:7, 5:7] = 3  # label 3 appears only in this prediction
    other = np.zeros_like(ref)
    other[2:4, 2:4] = 1
    for folder, array in (("pred", pred), ("ref", ref)):
        _write(tmp_path / folder, "a.nii.gz", array, (1.0, 1.0))
    for folder in ("pred", "ref"):
        _write(tmp_path / folder, "b.nii.gz", other, (1.0, 1.0))
    found = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", tmp_path / "m.csv", ["dice"], workers=1
    )
    assert found.labels == (1, 3)
    assert found.values["b"][3] == {"dice": 1.0}  # absent from both masks of case b
    assert found.values["a"][3] == {"dice": 0.0}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    named = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", tmp_path / "m.csv", ["dice"], workers=1
    )
    assert named.labels == (1,) and named.label_names == {0: "background", 1: "liver"}
    chosen = evaluate_folders(
        tmp_path / "pred", tmp_path / "ref", tmp_path / "m.csv", ["dice"], labels=[3], workers=1
    )
    assert chosen.labels == (3,)


def test_pairing_strips_channel_suffix_on_either_side(tmp_path: Path) -> None:
    array = np.zeros((4, 4), np.uint8)
    for folder, name in (
        ("pred", "a_0000.nii.gz"),
        ("ref", "a.nii.gz"),
        ("pred", "b.nii.gz"),
        ("ref", "b_0000.nii"),
        ("pred", "ring_0000.nii.gz"),  # a case whose name ends in _0000, matched exactly
        ("ref", "ring_0000.nii.gz"),
    ):
        _write(tmp_path / folder, name, array, (1, 1))
    pairs = pair_cases(tmp_path / "pred", tmp_path / "ref")
    assert list(pairs) == ["a", "b", "ring_0000"]
    assert pairs["a"][0].name == "a_0000.nii.gz" and pairs["b"][1].name == "b_0000.nii"


def test_missing_partner_names_the_case(tmp_path: Path) -> None:
    array = np.zeros((4, 4), np.uint8)
    _write(tmp_path / "pred", "a.nii.gz", array, (1, 1))
    _write(tmp_path / "pred", "lonely.nii.gz", array, (1, 1))
    _write(tmp_path / "ref", "a.nii.gz", array, (1, 1))
    with pytest.raises(
        DataError, match=r"case 'lonely': prediction lonely.nii.gz has no reference"
    ):
        evaluate_folders(
            tmp_path / "pred", tmp_path / "ref", tmp_path / "m.csv", ["dice"], workers=1
        )
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize(
    ("geometry", "what"),
    [
        ({"spacing": (1.0, 2.0)}, "spacing"),
        ({"origin": (0.0, 5.0)}, "origin"),
        ({"direction": (0.0, 1.0, 1.0, 0.0)}, "direction"),
        ({"shape": (4, 5)}, "size"),
    ],
)
def test_geometry_mismatch_checked_before_computing(
    tmp_path: Path, geometry, what, monkeypatch
) -> None:
    import segcli.engine.evaluate_cases as engine

    monkeypatch.setattr(
        engine, "evaluate_one", lambda task: pytest.fail("computed before checking")
    )
    array = np.zeros((4, 4), np.uint8)
    _write(tmp_path / "pred", "a.nii.gz", array, (1, 1))
    _write(tmp_path / "ref", "a.nii.gz", array, (1, 1))
    shape = geometry.pop("shape", (4, 4))
    spacing = geometry.pop("spacing", (1.0, 1.0))
    _write(tmp_path / "pred", "z.nii.gz", np.zeros(shape, np.uint8), spacing, **geometry)
    _write(tmp_path / "ref", "z.nii.gz", array, (1, 1))
    with pytest.raises(GeometryError, match=rf"case 'z'.*{what}"):
        evaluate_folders(
            tmp_path / "pred", tmp_path / "ref", tmp_path / "m.csv", ["dice"], workers=1
        )


def test_bad_label_map_writes_nothing(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = folders
    _write(pred_dir, "case_999.nii.gz", np.full((6, 14, 12), 0.5, np.float32))
    _write(ref_dir, "case_999.nii.gz", np.zeros((6, 14, 12), np.uint8))
    with pytest.raises(DataError, match=r"case 'case_999'.*non-integer"):
        evaluate_folders(
            pred_dir,
            ref_dir,
            tmp_path / "out" / "m.csv",
            ["dice"],
            workers=1,
            overlays_dir=tmp_path / "ov",
        )
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "ov").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_unreadable_file_names_the_case(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = folders
    (pred_dir / "case_000.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"case 'case_000'"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "m.csv", ["dice"], workers=1)


def test_option_errors(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = folders
    with pytest.raises(SpecError, match="did you mean 'dice'"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "m.csv", ["dcie"])
    with pytest.raises(SpecError, match="workers"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "m.csv", ["dice"], workers=0)
    with pytest.raises(SpecError, match="tolerance"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "m.csv", ["dice"], nsd_tolerance=-1)
    with pytest.raises(SpecError, match="labels"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "m.csv", ["dice"], labels=[0])
    with pytest.raises(SpecError, match="--overlays"):
        evaluate_folders(pred_dir, ref_dir, tmp_path / "m.csv", ["dice"], images_dir=tmp_path)
    assert not (tmp_path / "m.csv").exists()


def test_overlays_with_images_one_png_per_case(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, cases = folders
    for name, (_, ref) in cases.items():
        _write(tmp_path / "img", f"{name}_0000.nii.gz", ref.astype(np.float32) + 0.1)
    result = evaluate_folders(
        pred_dir, ref_dir, tmp_path / "m.csv", ["iou"], workers=1,
        overlays_dir=tmp_path / "ov", images_dir=tmp_path / "img",
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == [f"{c}.png" for c in cases]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.overlays)
    assert result.metrics == ("iou",)  # dice/hd95 drawn in the title but not written
    assert list(_read_csv(tmp_path / "m.csv")[0]) == ["case", "label", "iou"]


def test_overlay_2d_without_images(tmp_path: Path) -> None:
    ref = np.zeros((10, 10), np.uint8)
    ref[2:6, 2:6] = 1
    _write(tmp_path / "pred", "a.nii.gz", np.roll(ref, 1, 0), (1, 1))
    _write(tmp_path / "ref", "a.nii.gz", ref, (1, 1))
    result = evaluate_folders(
        tmp_path / "pred",
        tmp_path / "ref",
        tmp_path / "m.csv",
        ["dice"],
        workers=1,
        overlays_dir=tmp_path / "ov",
    )
    assert (
        result.overlays == (tmp_path / "ov" / "a.png",) and result.overlays[0].stat().st_size > 1000
    )


def test_overlay_missing_image_names_the_case(folders, tmp_path: Path) -> None:
    pred_dir, ref_dir, _ = folders
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match=r"case 'case_000': no image"):
        evaluate_folders(
            pred_dir,
            ref_dir,
            tmp_path / "m.csv",
            ["dice"],
            overlays_dir=tmp_path / "ov",
            images_dir=tmp_path / "img",
        )


def test_overlay_slices_prefer_reference_then_errors() -> None:
    ref = np.zeros((9, 6, 6), bool)
    ref[2, 1:5, 1:5] = True  # 16 voxels: largest reference slice
    ref[3, 2:4, 2:4] = True
    pred = ref.copy()
    pred[7, :, :] = True  # a big false positive slab: largest disagreement and prediction
    chosen = overlay_slices(ref, pred)
    assert chosen[0] == (2, "largest reference area")
    assert chosen[1] == (7, "largest disagreement")
    assert len({i for i, _ in chosen}) == 3
    assert [i for i, _ in overlay_slices(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 3), bool))] == [
        0,
        1,
    ]
