"""The preprocessing cache: built once, reused, rebuilt exactly where something changed, safe
against damaged files, full disks, interrupts and two builders at once; disk-mode patches equal
in-memory ones."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from segcli.config.schema import AugmentSpec, DataSpec
from segcli.data import cache as cache_mod
from segcli.data.cache import CacheSettings, build_cache, cache_folder, read_entry
from segcli.data.loaders import DiskCase, PatchDataset, cases_from_cache, load_cases
from segcli.errors import DataError
from segcli.io.images import index_to_physical, make_geometry, write_image


def make_dataset(root: Path, n: int = 3, shape=(9, 20, 24), seed: int = 0) -> Path:
    """CT-like cases with an air (zero-valued after shifting) border around a body block."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        image = np.zeros(shape, np.float32)
        image[1:-2, 3:-4, 2:-5] = rng.normal(50, 20, (shape[0] - 3, shape[1] - 7, shape[2] - 7))
        label = np.zeros(shape, np.uint8)
        label[3:6, 6:12, 6:14] = 1
        label[4:5, 12:14, 10:12] = 2
        geometry = make_geometry(shape, (2.5, 0.8, 0.7), origin=(5.0, -3.0, 11.0))
        write_image(root / "imagesTr" / f"case{i}_0000.nii.gz", image, geometry)
        write_image(root / "labelsTr" / f"case{i}.nii.gz", label, geometry)
    return root


def spec(root: Path, cache_dir: Path, **extra) -> DataSpec:
    return DataSpec(root=str(root), cache_dir=str(cache_dir), patch_size=[4, 8, 8], **extra)


SETTINGS = CacheSettings(True, (2.0, 1.0, 1.0), 3, "onehot")


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[DataSpec, list[str]]:
    root = make_dataset(tmp_path / "data")
    return spec(root, tmp_path / "cache"), ["case0", "case1", "case2"]


def test_second_build_reuses_and_a_changed_input_rebuilds_only_its_case(dataset) -> None:
    data, names = dataset
    first = build_cache(data, names, SETTINGS, workers=0)
    assert first.built == names and first.reused == []
    second = build_cache(data, names, SETTINGS, workers=0)
    assert second.built == [] and second.reused == names
    time.sleep(0.01)
    path = Path(data.root) / "imagesTr" / "case1_0000.nii.gz"
    os.utime(path, ns=(time.time_ns(), time.time_ns()))  # a new file in place (same content)
    third = build_cache(data, names, SETTINGS, workers=0)
    assert third.built == ["case1"]
    # another spacing is another cache folder; the first stays as it was
    other = CacheSettings(True, (2.5, 0.8, 0.7), 3, "onehot")
    assert cache_folder(data, other) != cache_folder(data, SETTINGS)
    assert build_cache(data, names, other, workers=0).built == names
    assert build_cache(data, names, SETTINGS, workers=0).built == []


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(dataset, damage: str) -> None:
    data, names = dataset
    report = build_cache(data, names, SETTINGS, workers=0)
    path = report.cases["case2"].path("image")
    good = np.load(path)
    if damage == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    elif damage == "edit":
        array = np.load(path)
        array[0, 0, 0, 0] += 1.0
        time.sleep(0.01)
        np.save(path, array)
    else:
        path.unlink()
    assert not report.cases["case2"].fresh(
        [
            Path(data.root) / "imagesTr" / "case2_0000.nii.gz",
            Path(data.root) / "labelsTr" / "case2.nii.gz",
        ]
    )
    again = build_cache(data, names, SETTINGS, workers=0)
    assert again.built == ["case2"]
    np.testing.assert_array_equal(np.load(path), good)


def test_an_edit_that_keeps_size_and_time_fails_the_checksum_on_load(dataset) -> None:
    data, names = dataset
    case = build_cache(data, names, SETTINGS, workers=0).cases["case0"]
    path = case.path("image")
    stat = path.stat()
    array = np.load(path)
    array[0, 1, 1, 1] += 5.0
    np.save(path, array)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="case0.*checksum"):
        case.load()


def test_crop_box_geometry_and_statistics(dataset) -> None:
    data, names = dataset
    settings = CacheSettings(True, None, 3, "onehot")
    case = build_cache(data, names[:1], settings, workers=0).cases["case0"]
    assert case.bbox == ((1, 7), (3, 16), (2, 19))
    assert case.shape == (1, 6, 13, 17)
    source = make_geometry((9, 20, 24), (2.5, 0.8, 0.7), origin=(5.0, -3.0, 11.0))
    np.testing.assert_allclose(case.geometry.origin, index_to_physical(source, [1, 3, 2]))
    image, label = case.load()
    assert abs(case.stats.mean[0] - float(image.mean(dtype=np.float64))) < 1e-3
    assert case.label_counts == {
        int(v): int(n) for v, n in zip(*np.unique(label, return_counts=True), strict=True)
    }
    locations, samples = case.extras()
    assert set(locations) == {1, 2}
    assert all((label[tuple(loc.T)] == c).all() for c, loc in locations.items())
    assert samples[0].size == int((label > 0).sum())


def test_without_crop_the_whole_image_is_kept(dataset) -> None:
    data, names = dataset
    case = build_cache(data, names[:1], CacheSettings(False, None, 3, "onehot"), workers=0)
    assert case.cases["case0"].shape == (1, 9, 20, 24)


@pytest.mark.parametrize("normalization", ["zscore", "ct", "minmax"])
def test_disk_mode_draws_the_same_patches_as_memory_mode(dataset, normalization: str) -> None:
    data, names = dataset
    data = data.model_copy(update={"normalization": normalization, "window": (0.0, 80.0)})
    memory = load_cases(data, names, 0, spacing=(2.0, 1.0, 1.0), mode="memory")
    disk = load_cases(data, names, 0, spacing=(2.0, 1.0, 1.0), mode="disk")
    assert all(isinstance(c, DiskCase) for c in disk)
    # patch deeper than the cases along the first axis: the padded path too
    kwargs = dict(patch_size=(10, 8, 8), foreground_fraction=0.5, augment=data.augment, length=24)
    a, b = PatchDataset(memory, **kwargs), PatchDataset(disk, **kwargs)
    for i in range(24):
        (ia, la), (ib, lb) = a[i], b[i]
        np.testing.assert_allclose(ia.numpy(), ib.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(la.numpy(), lb.numpy())
    for m, d in zip(memory, disk, strict=True):
        whole = d.materialize()
        np.testing.assert_allclose(whole.image, m.image, rtol=1e-5, atol=1e-5)
        assert d.label_values == m.label_values and d.label_counts == m.label_counts


@pytest.mark.parametrize(
    ("spacing", "pad_mode"),
    [(None, "minimum"), ([2.0, 1.0, 1.0], "minimum"), ([2.0, 1.0, 1.0], "constant")],
)
def test_disk_mode_reads_the_same_larger_crops_as_memory_mode(dataset, spacing, pad_mode) -> None:
    """nnU-Net's preset with every spatial transform firing: the crop grown around the patch
    (padded where it leaves the case) is read alike from memory and from the cache files; on
    the native 2.5 × 0.8 × 0.7 mm grid (anisotropic: in-plane transforms) and resampled to
    2 × 1 × 1 mm (isotropic).  Resampled, both pad with the minimum of the resampled image
    (cubic B-splines undershoot the raw minimum): the cache stores it beside the raw
    statistics."""
    data, names = dataset
    augment = AugmentSpec(
        preset="nnunet",
        rotation={"probability": 1.0},
        scaling={"probability": 0.5},
        elastic={"probability": 0.5, "sigma": [2, 3], "magnitude": [0, 2]},
    )
    data = data.model_copy(update={"spacing": spacing})
    memory = load_cases(data, names, 0, mode="memory")
    disk = load_cases(data, names, 0, mode="disk")
    kwargs = dict(
        patch_size=(6, 8, 8), foreground_fraction=0.5, augment=augment, length=12, pad_mode=pad_mode
    )
    a, b = PatchDataset(memory, **kwargs), PatchDataset(disk, **kwargs)
    for m, d in zip(memory, disk, strict=True):  # the padding value of either mode
        own = m.image.reshape(m.image.shape[0], -1).min(axis=1)
        np.testing.assert_allclose(d.minimum, own, rtol=1e-5, atol=1e-5)
    assert a.augment.spatial is not None
    assert a.augment.spatial.coarse_axis == (0 if spacing is None else None)
    for i in range(12):
        (ia, la), (ib, lb) = a[i], b[i]
        np.testing.assert_allclose(ia.numpy(), ib.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(la.numpy(), lb.numpy())


def test_a_disk_case_holds_no_voxels(tmp_path: Path) -> None:
    """What loader workers receive does not grow with the image (memory flat in the data)."""
    sizes = []
    for shape in ((9, 20, 24), (18, 60, 72)):
        root = make_dataset(tmp_path / f"d{shape[0]}", n=1, shape=shape)
        data = spec(root, tmp_path / "cache")
        (case,) = load_cases(data, ["case0"], 0, mode="disk")
        sizes.append(len(pickle.dumps(case)))
    assert sizes[1] < 1.5 * sizes[0] + 4096  # the image is 27× larger


def test_a_full_disk_names_the_case_and_keeps_the_cache_consistent(dataset, monkeypatch) -> None:
    data, names = dataset
    real = np.save
    calls = {"n": 0}

    def failing_save(handle, array, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the second case's image
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(handle, array, *args, **kwargs)

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    with pytest.raises(DataError, match="case 'case1'.*disk is full"):
        build_cache(data, names, SETTINGS, workers=0)
    folder = cache_folder(data, SETTINGS)
    assert read_entry(folder, "case0") is not None
    assert read_entry(folder, "case1") is None
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob("case1_*"))
    monkeypatch.setattr(cache_mod.np, "save", real)
    assert build_cache(data, names, SETTINGS, workers=0).built == ["case1", "case2"]


def test_an_interrupted_build_resumes_with_the_rest(dataset, monkeypatch) -> None:
    data, names = dataset
    real = cache_mod._build_case

    def interrupted(folder, name, *args):
        if name == "case1":
            raise KeyboardInterrupt
        return real(folder, name, *args)

    monkeypatch.setattr(cache_mod, "_build_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(data, names, SETTINGS, workers=0)
    monkeypatch.setattr(cache_mod, "_build_case", real)
    assert build_cache(data, names, SETTINGS, workers=0).built == ["case1", "case2"]


def _build_in_child(args) -> list[str]:
    root, cache_dir = args
    data = spec(Path(root), Path(cache_dir))
    return build_cache(data, ["case0", "case1", "case2"], SETTINGS, workers=0).built


def test_two_processes_on_a_cold_cache_build_each_case_once(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data")
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        built = pool.map(_build_in_child, [(str(root), str(tmp_path / "cache"))] * 2)
    assert sorted(built[0] + built[1]) == ["case0", "case1", "case2"]
    data = spec(root, tmp_path / "cache")
    report = build_cache(data, ["case0", "case1", "case2"], SETTINGS, workers=0)
    assert report.built == []
    for case in report.cases.values():
        case.load()  # checksums match: no interleaved writes


def test_worker_processes_build_the_same_cache(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data")
    serial = build_cache(spec(root, tmp_path / "a"), ["case0", "case1", "case2"], SETTINGS, 0)
    parallel = build_cache(spec(root, tmp_path / "b"), ["case0", "case1", "case2"], SETTINGS, 2)
    for name in serial.cases:
        for x, y in zip(serial.cases[name].load(), parallel.cases[name].load(), strict=True):
            np.testing.assert_array_equal(x, y)


def test_memory_mode_from_the_cache_equals_the_cached_arrays_normalised(dataset) -> None:
    data, names = dataset
    report = build_cache(data, names, SETTINGS, workers=0)
    (case,) = cases_from_cache(report, ["case0"], data, None, "memory")
    raw, label = report.cases["case0"].load()
    mean, std = report.cases["case0"].stats.mean[0], report.cases["case0"].stats.std[0]
    np.testing.assert_allclose(case.image, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(case.label, label)


@pytest.mark.parametrize(("old", "new"), [(True, "auto"), (False, "disk")])
def test_old_boolean_data_cache_still_loads(tmp_path: Path, old: bool, new: str) -> None:
    assert DataSpec(root=str(tmp_path), cache=old).cache == new
