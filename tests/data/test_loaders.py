"""Case lists, splits, loading (disk and synthetic), the patch dataset and its loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segcli.config import from_dict
from segcli.config.schema import AugmentSpec, DataSpec
from segcli.data.loaders import (
    CaseData,
    PatchDataset,
    build_loader,
    list_case_names,
    load_cases,
    split_cases,
)
from segcli.data.preprocessing import normalize
from segcli.data.synth import generate, write_dataset
from segcli.errors import DataError, SpecError
from segcli.io.images import make_geometry, write_image

SYN = {"cases": 6, "size": 16, "lesion": 2, "ring_distance": 3, "seed": 7}


def _data(data: dict[str, Any], dims: int = 2) -> DataSpec:
    data = {"patch_size": [16] * dims, **data}
    return from_dict({"data": data, "model": {"arch": "cnn", "dims": dims}}).data


def _names(n: int) -> list[str]:
    return [f"case_{i:02d}" for i in range(n)]


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_and_depends_on_the_seed() -> None:
    spec = _data({"synthetic": SYN, "val_fraction": 0.3})
    names = _names(20)
    train, val = split_cases(names, spec, seed=0)
    assert split_cases(list(reversed(names)), spec, seed=0) == (train, val)  # input order free
    assert len(val) == 6 and len(train) == 14
    assert sorted(train + val) == names and not set(train) & set(val)
    assert split_cases(names, spec, seed=1)[1] != val


@pytest.mark.parametrize(
    "n,fraction,n_val",
    [(10, 0.2, 2), (10, 0.01, 1), (10, 0.0, 0), (2, 0.9, 1), (1, 0.5, 0), (3, 0.99, 2)],
)
def test_split_sizes(n: int, fraction: float, n_val: int) -> None:
    train, val = split_cases(_names(n), _data({"synthetic": SYN, "val_fraction": fraction}), 0)
    assert len(val) == n_val and len(train) == n - n_val


def test_explicit_lists() -> None:
    names = _names(5)
    both = _data(
        {"synthetic": SYN, "train_cases": ["case_01", "case_00"], "val_cases": ["case_04"]}
    )
    assert split_cases(names, both, 0) == (["case_00", "case_01"], ["case_04"])
    only_val = _data({"synthetic": SYN, "val_cases": ["case_02"]})
    assert split_cases(names, only_val, 0) == (
        ["case_00", "case_01", "case_03", "case_04"],
        ["case_02"],
    )
    only_train = _data({"synthetic": SYN, "train_cases": ["case_02", "case_03"]})
    assert split_cases(names, only_train, 0) == (
        ["case_02", "case_03"],
        ["case_00", "case_01", "case_04"],
    )


def test_explicit_list_errors() -> None:
    names = _names(5)
    unknown = _data({"synthetic": SYN, "train_cases": ["case_01", "cse_03", "nope"]})
    with pytest.raises(
        DataError,
        match=r"data.train_cases: unknown case\(s\) 'cse_03', 'nope'.*did you mean 'case_03'",
    ):
        split_cases(names, unknown, 0)
    overlap = _data(
        {"synthetic": SYN, "train_cases": ["case_01", "case_02"], "val_cases": ["case_02"]}
    )
    with pytest.raises(DataError, match="share case.*'case_02'"):
        split_cases(names, overlap, 0)
    all_val = _data({"synthetic": SYN, "val_cases": names})
    with pytest.raises(DataError, match="no training cases"):
        split_cases(names, all_val, 0)
    with pytest.raises(DataError, match="no cases"):
        split_cases([], _data({"synthetic": SYN}), 0)


# --------------------------------------------------------------------------- case lists, loading


def test_synthetic_names_match_the_generator() -> None:
    spec = _data({"synthetic": SYN})
    assert list_case_names(spec, 0) == [
        c.name for c in generate(6, size=16, lesion=2, ring_distance=3)
    ]
    many = _data({"synthetic": {"cases": 1001, "size": 5, "lesion": 1, "ring_distance": 1}})
    names = list_case_names(many, 0)
    assert names[0] == "ring_0000" and names[-1] == "ring_1000"
    assert names == [c.name for c in generate(1001, size=5, lesion=1, ring_distance=1)]


@pytest.mark.parametrize("dims", [2, 3])
def test_disk_and_synthetic_loading_agree(tmp_path: Path, dims: int) -> None:
    cases = generate(4, dims=dims, size=16, lesion=2, ring_distance=3, seed=7)
    write_dataset(tmp_path / "toy", cases)
    disk_spec = _data({"root": str(tmp_path / "toy")}, dims)
    syn_spec = _data({"synthetic": {**SYN, "cases": 4, "dims": dims}}, dims)
    names = list_case_names(disk_spec, 0)
    assert names == list_case_names(syn_spec, 0) == [c.name for c in cases]
    wanted = [names[2], names[0]]  # order honoured
    disk = load_cases(disk_spec, wanted, seed=0)
    syn = load_cases(syn_spec, wanted, seed=0)
    for d, s, source in zip(disk, syn, [cases[2], cases[0]], strict=True):
        assert d.name == s.name == source.name
        assert d.image.shape == s.image.shape == (1,) + (16,) * dims
        assert d.image.dtype == np.float32
        np.testing.assert_allclose(d.image, s.image, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(d.image, normalize(source.image[None], "zscore"), atol=1e-6)
        np.testing.assert_array_equal(d.label, source.label)
        np.testing.assert_array_equal(s.label, source.label)
        assert d.spacing == s.spacing == (1.0,) * dims
        assert d.geometry == s.geometry


def test_synthetic_seed_falls_back_to_the_experiment_seed() -> None:
    spec = _data({"synthetic": {**SYN, "seed": None}, "normalization": "none"})
    a = load_cases(spec, ["ring_001"], seed=3)[0]
    b = load_cases(spec, ["ring_001"], seed=4)[0]
    reference = generate(6, size=16, lesion=2, ring_distance=3, seed=3)[1]
    np.testing.assert_array_equal(a.image[0], reference.image)  # normalization none: raw
    assert not np.array_equal(a.image, b.image)


def test_multichannel_cases_are_stacked_and_normalised_per_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    geometry = make_geometry((6, 7), (0.5, 2.0))
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    raw = rng.normal(size=(2, 6, 7)).astype(np.float32)
    raw[1] = raw[1] * 100 + 40
    write_image(tmp_path / "imagesTr" / "a_0000.nii.gz", raw[0], geometry)
    write_image(tmp_path / "imagesTr" / "a_0001.nii.gz", raw[1], geometry)
    write_image(tmp_path / "labelsTr" / "a.nii.gz", np.ones((6, 7), np.uint8), geometry)
    spec = _data({"root": str(tmp_path), "normalization": "minmax"})
    seen: list[str] = []

    def progress(items):
        for item in items:
            seen.append(item)
            yield item

    (case,) = load_cases(spec, ["a"], seed=0, progress=progress)
    assert seen == ["a"]
    assert isinstance(case, CaseData) and case.image.shape == (2, 6, 7)
    assert case.spacing == (0.5, 2.0) and case.geometry is not None
    for c in range(2):
        assert case.image[c].min() == pytest.approx(0.0) and case.image[c].max() == pytest.approx(
            1.0
        )
        np.testing.assert_allclose(
            case.image[c], (raw[c] - raw[c].min()) / (raw[c].max() - raw[c].min()), atol=1e-5
        )


def test_loading_errors(tmp_path: Path) -> None:
    missing = _data({"root": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match=r"nowhere.*segcli synth"):
        list_case_names(missing, 0)
    with pytest.raises(DataError, match=r"segcli synth"):
        load_cases(missing, ["x"], 0)
    with pytest.raises(DataError, match=r"unknown case\(s\) 'ring_999'"):
        load_cases(_data({"synthetic": SYN}), ["ring_999"], 0)
    with pytest.raises(SpecError, match="ct_auto"):
        load_cases(_data({"synthetic": SYN, "normalization": "ct_auto"}), ["ring_000"], 0)


# --------------------------------------------------------------------------- patch dataset


def _cases(n: int = 4, dims: int = 2, size: int = 16) -> list[CaseData]:
    spec = _data({"synthetic": {**SYN, "cases": n, "dims": dims, "size": size}}, dims)
    return load_cases(spec, list_case_names(spec, 0), seed=0)


def _dataset(cases: list[CaseData], **kwargs: Any) -> PatchDataset:
    dims = cases[0].image.ndim - 1
    options: dict[str, Any] = {
        "patch_size": [12] * dims,
        "foreground_fraction": 0.5,
        "augment": AugmentSpec(flip=True, rotate90=True, intensity=True),
        "length": 24,
        "seed": 5,
    }
    options.update(kwargs)
    return PatchDataset(cases, **options)


@pytest.mark.parametrize("dims", [2, 3])
def test_items_have_the_training_shapes_and_dtypes(dims: int) -> None:
    ds = _dataset(_cases(dims=dims))
    image, label = ds[0]
    assert image.shape == (1,) + (12,) * dims and image.dtype == torch.float32
    assert label.shape == (12,) * dims and label.dtype == torch.int64
    assert len(ds) == 24


def test_items_are_deterministic_in_seed_epoch_and_index() -> None:
    cases = _cases()
    a, b = _dataset(cases), _dataset(cases)
    later = [b[i] for i in reversed(range(6))][::-1]  # other order, other instance
    for i in range(6):
        assert torch.equal(a[i][0], later[i][0]) and torch.equal(a[i][1], later[i][1])
    a.set_epoch(3)
    assert torch.equal(a[2][0], b[(3, 2)][0])
    assert not torch.equal(a[2][0], b[(0, 2)][0])
    other_seed = _dataset(cases, seed=6)
    assert not torch.equal(other_seed[(0, 2)][0], b[(0, 2)][0])
    with pytest.raises(IndexError):
        a[24]


def test_foreground_share_matches_the_fraction() -> None:
    # 64×64 images with one 2×2 foreground square, patches of 16×16: a random patch contains
    # foreground with a small chance q; forced patches always do.  Expected share f + (1 − f)·q.
    cases = []
    for k in range(3):
        label = np.zeros((64, 64), np.uint8)
        label[10 + 15 * k : 12 + 15 * k, 40:42] = 1
        cases.append(CaseData(f"c{k}", np.zeros((1, 64, 64), np.float32), label, (1.0, 1.0)))
    n = 1500

    def share(fraction: float) -> float:
        ds = _dataset(
            cases,
            patch_size=[16, 16],
            foreground_fraction=fraction,
            length=n,
            augment=AugmentSpec(flip=False),
        )
        return float(np.mean([bool(ds[i][1].any()) for i in range(n)]))

    chance = share(0.0)
    assert 0.02 < chance < 0.15  # (16 + 1)² / 49² ≈ 0.12 of the start positions hit, minus borders
    for fraction in (0.33, 1.0):
        expected = fraction + (1 - fraction) * chance
        assert share(fraction) == pytest.approx(expected, abs=0.04)


def test_small_cases_are_padded_with_their_minimum() -> None:
    cases = _cases(size=10)  # 10×10 images, 12×12 patches
    ds = _dataset(cases, augment=AugmentSpec(flip=False))
    for i in range(8):
        image, _ = ds[i]
        border = torch.cat([image[0, 0], image[0, -1], image[0, :, 0], image[0, :, -1]])
        minima = {float(c.image.min()) for c in cases}
        assert {float(v) for v in border} <= minima


def test_loader_batches_are_identical_for_0_and_2_workers() -> None:
    ds = _dataset(_cases(), length=16)
    runs = []
    for workers in (0, 2):
        loader = build_loader(ds, batch_size=4, workers=workers, seed=1)
        epochs = []
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            epochs.append([(img.clone(), lab.clone()) for img, lab in loader])
        runs.append(epochs)
        del loader
    for epoch in (0, 1):
        assert len(runs[0][epoch]) == 4
        for (i0, l0), (i2, l2) in zip(runs[0][epoch], runs[1][epoch], strict=True):
            assert i0.shape == (4, 1, 12, 12) and l0.shape == (4, 12, 12)
            assert torch.equal(i0, i2) and torch.equal(l0, l2)
    # the persistent workers saw the new epoch
    assert not torch.equal(runs[1][0][0][0], runs[1][1][0][0])
    # and the batches are the dataset's items in order
    ds.set_epoch(1)
    assert torch.equal(runs[0][1][1][0][2], ds[6][0])


def test_dataset_errors() -> None:
    cases = _cases()
    with pytest.raises(DataError, match="has 2 spatial axes.*patch_size"):
        _dataset(cases, patch_size=[8, 8, 8])
    unlabelled = [CaseData("u", cases[0].image, None, (1.0, 1.0))]
    with pytest.raises(DataError, match="case 'u' has no label"):
        _dataset(unlabelled)
    mixed = [
        cases[0],
        CaseData("two", np.zeros((2, 16, 16), np.float32), cases[0].label, (1.0, 1.0)),
    ]
    with pytest.raises(DataError, match="different numbers of channels"):
        _dataset(mixed)
    with pytest.raises(DataError, match="no training cases"):
        PatchDataset([], [8, 8], 0.5, AugmentSpec(), length=4, seed=0)
