"""Reading an evaluate CSV back: values, NaN cells, stray-label rows, and what is refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from segcli.errors import DataError
from segcli.report.data import load_run, write_meta
from segcli.report.pitfalls import MapScan, find_pitfalls


def test_values_nan_cells_and_stray_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "case,label,dice,hd95\n"
        "a,1,0.5,2.25\n"
        "a,2,0.0,\n"
        "a,7,0,\n"  # a stray label: evaluate writes rows only where it was predicted
        "b,1,1,0\n"
        "b,2,0.75,1.5\n"
    )
    run = load_run(path)
    assert run.labels == (1, 2) and run.cases == ("a", "b")
    assert run.values["a"][1] == {"dice": 0.5, "hd95": 2.25}
    assert math.isnan(run.values["a"][2]["hd95"])
    assert set(run.extra) == {7} and set(run.extra[7]) == {"a"}
    titles = [f.title for f in find_pitfalls(run, MapScan(gap="no maps"))]
    assert "label 7 predicted but in no reference" in titles


def test_sidecar_names_the_scored_labels_and_folders(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("case,label,dice\na,1,0.5\na,3,0\nb,1,1\nb,3,1\n")
    write_meta(
        path,
        pred_dir=tmp_path / "p",
        ref_dir=tmp_path / "r",
        images_dir=None,
        metrics=("dice",),
        labels=(1,),
        label_names={1: "liver"},
        nsd_tolerance=1.0,
        voxels={"a": {1: (5, 4)}, "b": {1: (3, 3)}},
        ndim=3,
    )
    run = load_run(path)
    assert run.labels == (1,) and set(run.extra) == {3}
    assert run.pred_dir == (tmp_path / "p").resolve() and run.images_dir is None
    assert run.label_title(1) == "label 1 (liver)" and run.voxels("a", 1) == (5, 4)
    assert load_run(path, pred_dir=tmp_path / "q").pred_dir == (tmp_path / "q").resolve()


def test_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("case,label,dice\na,1,0.5\na,1,0.6\n")
    with pytest.raises(DataError, match="label 1 appears twice"):
        load_run(path)
    path.write_text("case,label,dice\na,1,0.5\nb,2,0.6\n")
    with pytest.raises(DataError, match="no label has a row for every case"):
        load_run(path)
    with pytest.raises(DataError, match="metrics CSV not found"):
        load_run(tmp_path / "missing.csv")
    path.write_text("case,label,dice\na,1,0.5\n")
    (tmp_path / "m_meta.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not a segcli evaluation record"):
        load_run(path)
