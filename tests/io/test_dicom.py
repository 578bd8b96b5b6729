"""DICOM series input: ``read_dicom_series``, ``find_inputs`` / ``read_case`` and ``segcli predict``
on small series written slice by slice with SimpleITK."""

from __future__ import annotations

import locale
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.errors import DataError
from segcli.io.dataset import find_inputs, read_case
from segcli.io.images import (
    is_dicom_folder,
    make_geometry,
    read_dicom_series,
    read_geometry,
    read_label,
    write_image,
)

runner = CliRunner()

UID = "1.2.826.0.1.3680043.8.498.1"
SPACING = (2.5, 0.8, 0.6)  # (sz, sy, sx) in mm, array axis order
ORIGIN = (-10.0, 20.5, 35.0)  # world (x, y, z)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
#: row and column direction cosines, rotated 30° in the plane
OBLIQUE = (np.sqrt(3) / 2, 0.5, 0.0, -0.5, np.sqrt(3) / 2, 0.0)


def volume(shape: tuple[int, int, int] = (5, 7, 9), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1500, size=shape).astype(np.int16)


def write_series(
    folder: Path,
    array: np.ndarray,
    uid: str = UID,
    orientation: Sequence[float] = IDENTITY,
    skip: Sequence[int] = (),
) -> list[Path]:
    """Write ``array`` (z, y, x) as one int16 CT slice file per z, named in *reverse* position
    order (so reading by file name would flip the volume); returns the files by position.

    GDCM's writer sets the C locale to "C" (Python's default text encoding then becomes ASCII
    for the rest of the test session): restored here.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_series(folder, array, uid, orientation, skip)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series(
    folder: Path,
    array: np.ndarray,
    uid: str,
    orientation: Sequence[float],
    skip: Sequence[int],
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    sz, sy, sx = SPACING
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(array.shape[0]):
        path = folder / f"IM{array.shape[0] - 1 - k:04d}.dcm"
        files.append(path)
        if k in skip:
            continue
        image = sitk.GetImageFromArray(array[k].astype(np.int16))
        image.SetSpacing((sx, sy))
        position = np.asarray(ORIGIN) + k * sz * normal
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT image storage
            "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": "CT",
            "0020|000d": f"{UID}.100",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
            "0028|0030": f"{sy}\\{sx}",
            "0018|0050": f"{sz}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(path))
        writer.Execute(image)
    return files


def world_direction(orientation: Sequence[float]) -> tuple[float, ...]:
    """SimpleITK's row-major direction matrix: columns row, column, normal cosines."""
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return tuple(np.stack([row, col, np.cross(row, col)], axis=1).ravel())


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("orientation", [IDENTITY, OBLIQUE], ids=["axial", "oblique"])
def test_read_dicom_series_keeps_array_and_geometry(
    tmp_path: Path, orientation: Sequence[float]
) -> None:
    array = volume()
    write_series(tmp_path / "ct", array, orientation=orientation)
    out, geometry = read_dicom_series(tmp_path / "ct")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, array)  # (z, y, x), slices in position order
    assert geometry.size == array.shape
    np.testing.assert_allclose(geometry.spacing, SPACING, atol=1e-5)
    np.testing.assert_allclose(geometry.origin, ORIGIN, atol=1e-5)
    np.testing.assert_allclose(geometry.direction, world_direction(orientation), atol=1e-5)


def test_is_dicom_folder(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", volume((2, 4, 4)))
    assert is_dicom_folder(tmp_path / "ct")
    write_image(tmp_path / "nii" / "a.nii.gz", np.zeros((4, 4)), make_geometry((4, 4)))
    (tmp_path / "empty").mkdir()
    for path in ("nii", "empty", "missing", "nii/a.nii.gz"):
        assert not is_dicom_folder(tmp_path / path), path


def test_find_inputs_and_read_case_on_a_series_folder(tmp_path: Path) -> None:
    array = volume()
    write_series(tmp_path / "patient_7", array)
    cases = find_inputs(tmp_path / "patient_7")
    assert cases == {"patient_7": (tmp_path / "patient_7",)}
    image, geometry = read_case(cases["patient_7"], 1)
    assert image.shape == (1, *array.shape)
    np.testing.assert_array_equal(image[0], array)
    np.testing.assert_allclose(geometry.spacing, SPACING, atol=1e-5)
    with pytest.raises(DataError, match=r"patient_7: a DICOM series folder is one channel"):
        read_case(cases["patient_7"], 2)


def test_find_inputs_one_case_per_series_sub_folder(tmp_path: Path) -> None:
    write_series(tmp_path / "all" / "b", volume((2, 4, 4)), uid=f"{UID}.2")
    write_series(tmp_path / "all" / "a", volume((3, 4, 4)), uid=f"{UID}.1")
    (tmp_path / "all" / "notes").mkdir()
    (tmp_path / "all" / "notes" / "readme.txt").write_text("not an image")
    cases = find_inputs(tmp_path / "all")
    assert cases == {"a": (tmp_path / "all" / "a",), "b": (tmp_path / "all" / "b",)}


def test_image_files_beside_dicom_keep_todays_behaviour(tmp_path: Path) -> None:
    """A folder with NIfTI files is read as before, whatever DICOM sits beside them."""
    write_image(tmp_path / "x_0000.nii.gz", np.zeros((4, 4)), make_geometry((4, 4)))
    write_series(tmp_path / "ct", volume((2, 4, 4)))
    write_series(tmp_path, volume((2, 4, 4)))
    assert find_inputs(tmp_path) == {"x": (tmp_path / "x_0000.nii.gz",)}


def test_a_single_dicom_file_points_at_its_folder(tmp_path: Path) -> None:
    files = write_series(tmp_path / "ct", volume((2, 4, 4)))
    with pytest.raises(DataError, match=r"IM0001\.dcm: a single DICOM file.*ct\)"):
        find_inputs(files[0])


# --------------------------------------------------------------------------- broken series


def test_several_series_list_their_ids_and_counts(tmp_path: Path) -> None:
    write_series(tmp_path / "mixed", volume((3, 4, 4)), uid=f"{UID}.1")
    write_series(tmp_path / "other", volume((2, 4, 4)), uid=f"{UID}.2")
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    for read in (read_dicom_series, find_inputs):
        with pytest.raises(DataError) as info:
            read(tmp_path / "mixed")
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'mixed'}: holds 2 DICOM series")
        assert f"{UID}.1 (3 files)" in message and f"{UID}.2 (2 files)" in message
        assert "one series" in message


def test_truncated_slice_is_refused(tmp_path: Path) -> None:
    files = write_series(tmp_path / "ct", volume())
    files[2].write_bytes(files[2].read_bytes()[: files[2].stat().st_size // 2])
    for read in (read_dicom_series, find_inputs):
        with pytest.raises(DataError, match=rf"^{tmp_path / 'ct'}: 1 DICOM file.*IM0002\.dcm"):
            read(tmp_path / "ct")


def test_missing_slice_is_refused(tmp_path: Path) -> None:
    """SimpleITK itself would read it, spreading the slices over the gap; segcli refuses."""
    write_series(tmp_path / "ct", volume(), skip=[2])
    with pytest.raises(DataError, match=r"ct: the slices are not evenly spaced: 5 mm between"):
        read_dicom_series(tmp_path / "ct")


def test_slices_of_different_sizes_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", volume((4, 6, 6)))
    write_series(tmp_path / "small", volume((4, 5, 6)))
    (tmp_path / "small" / "IM0001.dcm").replace(tmp_path / "ct" / "IM0001.dcm")
    with pytest.raises(DataError, match=r"ct: the slices differ in size: IM0001\.dcm"):
        read_dicom_series(tmp_path / "ct")


def test_no_series(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no DICOM series found"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(DataError, match=r"empty: no images found"):
        find_inputs(tmp_path / "empty")
    with pytest.raises(DataError, match=r"nowhere: DICOM series folder not found"):
        read_dicom_series(tmp_path / "nowhere")


# --------------------------------------------------------------------------- segcli predict


@pytest.fixture
def spec3d(tmp_path: Path, make_checkpoint: Callable) -> Path:
    """A 3-D spec with a freshly initialised checkpoint in its run folder (as in
    tests/test_cli_predict.py's ``setup``, one dimension up)."""
    raw = {
        "name": "cli",
        "data": {"root": str(tmp_path / "unused"), "patch_size": [4, 8, 8]},
        "model": {"arch": "cnn", "dims": 3, "filters": 2, "layers": 2},
        "inference": {"batch_size": 4},
        "output": str(tmp_path / "runs"),
    }
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(raw))
    make_checkpoint(load(spec), tmp_path / "runs" / "cli" / "checkpoint_best.pt")
    return spec


def predict(spec: Path, input: Path, out: Path):
    return runner.invoke(
        app, ["predict", str(spec), "-i", str(input), "-o", str(out), "--device", "cpu"]
    )


@pytest.mark.parametrize("orientation", [IDENTITY, OBLIQUE], ids=["axial", "oblique"])
def test_predict_on_a_series_writes_nifti_with_its_geometry(
    tmp_path: Path, spec3d: Path, orientation: Sequence[float]
) -> None:
    array = volume((5, 12, 10))
    write_series(tmp_path / "ct_042", array, orientation=orientation)
    out = tmp_path / "pred"
    result = predict(spec3d, tmp_path / "ct_042", out)
    assert result.exit_code == 0, result.output
    assert "predicted 1 case(s)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["ct_042.nii.gz"]
    labels, geometry = read_label(out / "ct_042.nii.gz")
    assert labels.shape == array.shape
    assert geometry == read_geometry(out / "ct_042.nii.gz")
    assert not geometry.differences(read_dicom_series(tmp_path / "ct_042")[1], atol=1e-4)
    np.testing.assert_allclose(geometry.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(geometry.direction, world_direction(orientation), atol=1e-4)


def test_predict_on_series_sub_folders_fails_only_the_broken_one(
    tmp_path: Path, spec3d: Path
) -> None:
    write_series(tmp_path / "all" / "good", volume((4, 8, 8)), uid=f"{UID}.1")
    write_series(tmp_path / "all" / "gap", volume((4, 8, 8)), uid=f"{UID}.2", skip=[1])
    out = tmp_path / "pred"
    result = predict(spec3d, tmp_path / "all", out)
    assert result.exit_code == 1
    assert "1 case(s) failed" in result.output
    assert f"{tmp_path / 'all' / 'gap'}: the slices are not evenly spaced" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]


def test_predict_on_several_series_exits_1_naming_the_folder(tmp_path: Path, spec3d: Path) -> None:
    write_series(tmp_path / "mixed", volume((3, 8, 8)), uid=f"{UID}.1")
    write_series(tmp_path / "other", volume((2, 8, 8)), uid=f"{UID}.2")
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / "mixed" / f"b_{path.name}")
    out = tmp_path / "pred"
    result = predict(spec3d, tmp_path / "mixed", out)
    assert result.exit_code == 1
    output = result.output
    assert "mixed: holds 2 DICOM series" in output and "Traceback" not in output
    assert not out.exists()


@pytest.mark.parametrize("broken", ["truncated", "empty"])
def test_predict_on_a_broken_series_exits_1_and_writes_nothing(
    tmp_path: Path, spec3d: Path, broken: str
) -> None:
    folder = tmp_path / "ct_broken"
    if broken == "truncated":
        files = write_series(folder, volume((4, 8, 8)))
        files[1].write_bytes(files[1].read_bytes()[: files[1].stat().st_size // 2])
    else:
        folder.mkdir()
    out = tmp_path / "pred"
    result = predict(spec3d, folder, out)
    assert result.exit_code == 1
    output = result.output
    assert "ct_broken: " in output and "Traceback" not in output
    assert not out.exists() or not any(out.iterdir())
