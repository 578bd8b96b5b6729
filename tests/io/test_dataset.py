from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segcli.errors import DataError, GeometryError
from segcli.io.dataset import dataset_labels, find_cases, group_images
from segcli.io.images import make_geometry, write_image


def put(path: Path, shape=(4, 5), spacing=(1.0, 1.0), value=0) -> None:
    write_image(path, np.full(shape, value, dtype=np.uint8), make_geometry(shape, spacing))


def make_dataset(
    root: Path, cases: dict[str, int], labels: bool = True, suffix: bool = True
) -> Path:
    for case, channels in cases.items():
        for c in range(channels):
            name = f"{case}_{c:04d}.nii.gz" if suffix else f"{case}.nii.gz"
            put(root / "imagesTr" / name)
        if labels:
            put(root / "labelsTr" / f"{case}.nii.gz")
    return root


def test_channel_suffix_groups_channels(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"b": 2, "a": 2})
    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert cases[0].label is not None and cases[0].label.name == "a.nii.gz"


def test_plain_msd_naming(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"hippocampus_001": 1, "hippocampus_003": 1}, suffix=False)
    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == ["hippocampus_001", "hippocampus_003"]
    assert all(len(c.images) == 1 for c in cases)


def test_hidden_and_foreign_files_are_ignored(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 1})
    (tmp_path / "imagesTr" / ".a_0000.nii.gz").write_bytes(b"junk")
    (tmp_path / "imagesTr" / "README.txt").write_text("hi")
    assert [c.name for c in find_cases(tmp_path)] == ["a"]


def test_missing_partner_is_named(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'b' has no label in labelsTr/"):
        find_cases(tmp_path)
    put(tmp_path / "labelsTr" / "b.nii.gz")
    put(tmp_path / "labelsTr" / "c.nii.gz")
    with pytest.raises(DataError, match="label 'c' has no image in imagesTr/"):
        find_cases(tmp_path)
    assert len(find_cases(tmp_path, require_labels=False)) == 2


def test_missing_channel_and_unequal_channel_counts(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 2})
    put(tmp_path / "imagesTr" / "b_0001.nii.gz")
    put(tmp_path / "labelsTr" / "b.nii.gz")
    with pytest.raises(DataError, match="case 'b' is missing channel file.*b_0000"):
        find_cases(tmp_path)
    put(tmp_path / "imagesTr" / "b_0000.nii.gz")
    put(tmp_path / "imagesTr" / "c_0000.nii.gz")
    put(tmp_path / "labelsTr" / "c.nii.gz")
    with pytest.raises(DataError, match="different numbers of channels"):
        find_cases(tmp_path)


def test_geometry_mismatch_names_the_case(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 1, "b": 1})
    put(tmp_path / "labelsTr" / "b.nii.gz", spacing=(1.0, 2.0))
    with pytest.raises(
        GeometryError, match=r"case 'b'.*spacing \(1, 1\) vs \(1, 2\)|case 'b'.*spacing"
    ):
        find_cases(tmp_path)
    put(tmp_path / "labelsTr" / "b.nii.gz", shape=(4, 6))
    with pytest.raises(GeometryError, match="case 'b'.*size"):
        find_cases(tmp_path)


def test_empty_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        find_cases(tmp_path / "nothing")
    with pytest.raises(DataError, match="no imagesTr/ folder"):
        find_cases(tmp_path)
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_cases(tmp_path)


def test_dataset_json_labels_both_orientations(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "liver"}}))
    assert dataset_labels(tmp_path) == {0: "bg", 1: "liver"}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 2}}))
    assert dataset_labels(tmp_path) == {0: "background", 2: "tumour"}
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(DataError, match="not a valid dataset.json"):
        dataset_labels(tmp_path)


def test_group_images_mixed_naming_is_plain(tmp_path: Path) -> None:
    files = [tmp_path / "x_0000.nii.gz", tmp_path / "y.nii.gz"]
    assert set(group_images(files)) == {"x_0000", "y"}
