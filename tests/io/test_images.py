from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segcli.errors import DataError, GeometryError
from segcli.io.images import (
    check_same_grid,
    make_geometry,
    read_geometry,
    read_image,
    read_label,
    strip_suffix,
    write_image,
)


def rotated_geometry(shape: tuple[int, ...]) -> tuple:
    """Anisotropic spacing, non-zero origin and a rotated (non-identity) direction."""
    dims = len(shape)
    theta = 0.3
    rot = np.eye(dims)
    rot[0, 0], rot[0, 1], rot[1, 0], rot[1, 1] = (
        np.cos(theta),
        -np.sin(theta),
        np.sin(theta),
        np.cos(theta),
    )
    spacing = (3.0, 0.7, 1.2)[-dims:]
    origin = (-12.5, 40.25, 7.0)[:dims]
    return make_geometry(shape, spacing, origin, tuple(rot.ravel()))


@pytest.mark.parametrize("shape", [(7, 11), (5, 9, 13)])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_round_trip_keeps_array_and_geometry(tmp_path: Path, shape, suffix: str) -> None:
    rng = np.random.default_rng(1)
    array = rng.normal(size=shape).astype(np.float32)
    geometry = rotated_geometry(shape)
    path = write_image(tmp_path / f"img{suffix}", array, geometry)
    back, back_geometry = read_image(path)
    np.testing.assert_array_equal(back, array)
    assert back_geometry.size == shape
    assert back_geometry.differences(geometry) == []
    assert read_geometry(path).differences(geometry) == []


def test_axis_order_is_array_order(tmp_path: Path) -> None:
    """SimpleITK reports (x, y, z); segcli reports array axis order (z, y, x)."""
    image = sitk.Image(4, 5, 6, sitk.sitkFloat32)  # x=4, y=5, z=6
    image.SetSpacing((0.5, 1.0, 2.5))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    array, geometry = read_image(tmp_path / "a.nii.gz")
    assert array.shape == (6, 5, 4) == geometry.size
    assert geometry.spacing == (2.5, 1.0, 0.5)


def test_label_write_uses_compact_integer_type(tmp_path: Path) -> None:
    label = np.zeros((4, 4), dtype=np.int64)
    label[1, 1] = 117
    path = write_image(tmp_path / "l.nii.gz", label, make_geometry(label.shape))
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
    back, _ = read_label(path)
    np.testing.assert_array_equal(back, label)


def test_float_label_with_integer_values_is_accepted(tmp_path: Path) -> None:
    label = np.array([[0, 1], [2, 0]], dtype=np.float32)
    write_image(tmp_path / "l.nii.gz", label, make_geometry(label.shape))
    back, _ = read_label(tmp_path / "l.nii.gz")
    assert back.dtype.kind in "iu" and back.tolist() == [[0, 1], [2, 0]]


@pytest.mark.parametrize(
    ("values", "message"),
    [([[0.0, 0.5], [1.0, 0.0]], "non-integer"), ([[0, -1], [1, 0]], "negative")],
)
def test_bad_label_maps_are_refused(tmp_path: Path, values, message: str) -> None:
    array = np.array(values, dtype=np.float32 if message == "non-integer" else np.int16)
    write_image(tmp_path / "l.nii.gz", array, make_geometry(array.shape))
    with pytest.raises(DataError, match=message):
        read_label(tmp_path / "l.nii.gz")


def test_missing_truncated_and_nan_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.nii.gz: file not found"):
        read_image(tmp_path / "nope.nii.gz")
    array = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    path = write_image(tmp_path / "t.nii.gz", array, make_geometry(array.shape))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.nii.gz: the file is truncated"):
        read_image(path)
    array[0, 0, 0] = np.nan
    write_image(tmp_path / "n.nii.gz", array, make_geometry(array.shape))
    with pytest.raises(DataError, match="n.nii.gz: contains NaN"):
        read_image(tmp_path / "n.nii.gz")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    array = np.zeros((3, 3), dtype=np.uint8)
    write_image(tmp_path / "a.nii.gz", array, make_geometry(array.shape))
    with pytest.raises(ValueError, match="does not match"):
        write_image(tmp_path / "b.nii.gz", array, make_geometry((4, 4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]


def test_geometry_differences_name_the_field() -> None:
    a = make_geometry((4, 4), (1.0, 1.0))
    check_same_grid(a, make_geometry((4, 4), (1.0, 1.00000001)), "same")
    with pytest.raises(
        GeometryError, match=r"case 'x': geometry differs: spacing \(1, 1\) vs \(2, 1\)"
    ):
        check_same_grid(a, make_geometry((4, 4), (2.0, 1.0)), "case 'x'")
    with pytest.raises(GeometryError, match="origin"):
        check_same_grid(a, make_geometry((4, 4), origin=(0.0, 5.0)), "o")
    with pytest.raises(GeometryError, match="size"):
        check_same_grid(a, make_geometry((4, 5)), "s")


def test_strip_suffix() -> None:
    assert strip_suffix("case_0000.nii.gz") == "case_0000"
    assert strip_suffix("a.b.mha") == "a.b"
    assert strip_suffix("notes.txt") == "notes.txt"


def test_truncated_integer_nifti_is_refused(tmp_path: Path) -> None:
    label = (np.random.default_rng(0).random((30, 30, 30)) > 0.5).astype(np.uint8)
    path = write_image(tmp_path / "l.nii.gz", label, make_geometry(label.shape))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(DataError, match="l.nii.gz: the file is truncated"):
        read_label(path)


def test_written_files_get_umask_permissions_not_owner_only(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "a.nii.gz", np.zeros((2, 2), np.uint8), make_geometry((2, 2)))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
