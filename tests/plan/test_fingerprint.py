"""The fingerprint against brute-force references on synthetic cases; the cache."""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcli.errors import DataError
from segcli.plan.fingerprint import (
    SAMPLES_TOTAL,
    extract_fingerprint,
    fingerprint_is_fresh,
    label_case,
    label_summary,
    load_fingerprint,
    nonzero_bbox,
    save_fingerprint,
)

from .conftest import make_dataset


def brute_components(mask: np.ndarray) -> list[list[tuple[int, ...]]]:
    """Face-connected components by breadth-first search (the obviously correct reference)."""
    seen = np.zeros(mask.shape, bool)
    out = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        queue, comp = deque([start]), []
        seen[start] = True
        while queue:
            p = queue.popleft()
            comp.append(p)
            for axis in range(mask.ndim):
                for step in (-1, 1):
                    q = list(p)
                    q[axis] += step
                    q = tuple(q)
                    if 0 <= q[axis] < mask.shape[axis] and mask[q] and not seen[q]:
                        seen[q] = True
                        queue.append(q)
        out.append(comp)
    return out


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7))),
    st.tuples(*(st.sampled_from([0.5, 1.0, 2.5]),) * 3),
)
def test_label_case_matches_brute_force(mask: np.ndarray, spacing: tuple[float, ...]) -> None:
    got = label_case(mask, spacing)
    comps = brute_components(mask)
    assert got.voxels == int(mask.sum())
    assert got.components == len(comps)
    if not comps:
        assert got.smallest_voxels == 0 and got.largest_extent_voxels == (0, 0, 0)
        return
    sizes = [len(c) for c in comps]
    assert got.smallest_voxels == min(sizes)
    assert got.smallest_mm3 == pytest.approx(min(sizes) * np.prod(spacing))
    biggest = [c for c in comps if len(c) == max(sizes)]
    extents = {
        tuple(max(p[a] for p in c) - min(p[a] for p in c) + 1 for a in range(3)) for c in biggest
    }
    assert got.largest_extent_voxels in extents
    assert got.largest_extent_mm == pytest.approx(
        tuple(e * s for e, s in zip(got.largest_extent_voxels, spacing, strict=True))
    )


def test_nonzero_bbox_is_the_bounding_box() -> None:
    image = np.zeros((2, 6, 7, 8), np.float32)
    image[0, 1, 2, 3] = 1.0
    image[1, 4, 5, 6] = -2.0  # any channel counts
    label = np.zeros((6, 7, 8), np.uint8)
    label[2, 1, 3] = 1  # and labelled voxels
    assert nonzero_bbox(image, label) == (slice(1, 5), slice(1, 6), slice(3, 7))
    assert nonzero_bbox(np.zeros((1, 3, 3))) == (slice(0, 3), slice(0, 3))


def test_extract_fingerprint_on_known_cases(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=4, shape=(12, 14, 16), spacing=(2.0, 1.0, 0.5),
                        channel_names={"0": "T1", "1": "FLAIR"}, channels=2,
                        labels={"background": 0, "blob": 1})  # fmt: skip
    fp = extract_fingerprint(root, workers=1)
    assert fp.channels == ("T1", "FLAIR")
    assert fp.label_names == {0: "background", 1: "blob"}
    assert fp.labels_declared and fp.dims == 3
    assert [c.name for c in fp.cases] == ["case00", "case01", "case02", "case03"]
    from segcli.io.images import read_image, read_label

    brute_fg: list[list[np.ndarray]] = [[], []]
    for case in fp.cases:
        label, geometry = read_label(root / "labelsTr" / f"{case.name}.nii.gz")
        assert case.spacing == (2.0, 1.0, 0.5) == geometry.spacing
        assert case.shape == (12, 14, 16)
        stats = case.labels[1]
        assert stats.voxels == int((label == 1).sum()) == 6**3
        assert stats.components == 1
        assert stats.largest_extent_voxels == (6, 6, 6)
        assert stats.largest_extent_mm == (12.0, 6.0, 3.0)
        for c in range(2):
            image, _ = read_image(root / "imagesTr" / f"{case.name}_{c:04d}.nii.gz")
            brute_fg[c].append(image[label > 0])
    # samples are drawn from the foreground only: their range lies inside the brute-force one
    for c, channel in enumerate(fp.intensities):
        fg = np.concatenate(brute_fg[c])
        assert fg.min() <= channel.min and channel.max <= fg.max()
        assert channel.samples == 4 * (SAMPLES_TOTAL // 4)
        assert channel.mean == pytest.approx(fg.mean(), abs=0.02)
        assert channel.percentile_99_5 == pytest.approx(np.percentile(fg, 99.5), abs=0.1)
    summary = label_summary(fp, (2.0, 1.0, 0.5))[1]
    assert summary.voxel_share == pytest.approx(4 * 216 / (4 * 12 * 14 * 16))
    assert summary.largest_extent_voxels == (6, 6, 6)
    # at a coarser target spacing the same object spans fewer voxels
    assert label_summary(fp, (4.0, 2.0, 1.0))[1].largest_extent_voxels == (3, 3, 3)


def test_parallel_workers_give_the_same_fingerprint(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=3, shape=(10, 10, 10))
    one = extract_fingerprint(root, workers=1)
    two = extract_fingerprint(root, workers=2)
    assert [c.labels for c in one.cases] == [c.labels for c in two.cases]
    assert one.intensities == two.intensities


def test_round_trip_and_version(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=2, shape=(8, 8, 8), radius=2)
    fp = extract_fingerprint(root, workers=1)
    path = tmp_path / "exp.fingerprint.json"
    save_fingerprint(fp, path)
    back = load_fingerprint(path)
    assert back.cases == fp.cases and back.intensities == fp.intensities
    assert back.label_names == fp.label_names
    raw = json.loads(path.read_text())
    raw["version"] = 999
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="version 999"):
        load_fingerprint(path)


def test_freshness_follows_the_dataset_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=2, shape=(8, 8, 8), radius=2)
    path = tmp_path / "exp.fingerprint.json"
    assert not fingerprint_is_fresh(path, root)
    save_fingerprint(extract_fingerprint(root, workers=1), path)
    assert fingerprint_is_fresh(path, root)
    label = root / "labelsTr" / "case01.nii.gz"
    later = path.stat().st_mtime_ns + 10**9
    os.utime(label, ns=(later, later))
    assert not fingerprint_is_fresh(path, root)


def test_undeclared_label_names_the_case(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=2, shape=(8, 8, 8), radius=2,
                        labels={"0": "background", "2": "other"})  # fmt: skip
    with pytest.raises(DataError, match=r"case 'case00': label value\(s\) \[1\]"):
        extract_fingerprint(root, workers=1)


def test_nnunet_v2_region_labels_are_read(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=2, shape=(8, 8, 8), radius=2,
                        labels={"background": 0, "edema": 1, "core": [1, 2]})  # fmt: skip
    fp = extract_fingerprint(root, workers=1)
    # in nnU-Net's region form every foreground entry is a region, in the file's order
    assert fp.regions == {"edema": (1,), "core": (1, 2)}
    assert fp.label_values == (1, 2)


def test_case_fingerprint_per_label_equals_the_full_mask_statistics() -> None:
    from segcli.plan.fingerprint import case_fingerprint

    rng = np.random.default_rng(3)
    label = (rng.random((9, 10, 11)) < 0.15).astype(np.uint8) * 3  # scattered 3s
    label[1:4, 2:6, 3:5] = 1
    label[6:8, 6:9, 7:10] = 1  # two components of 1
    image = rng.normal(size=(1, 9, 10, 11)).astype(np.float32)
    record, samples, _ = case_fingerprint("c", image, label, (1.0, 2.0, 0.5), 100)
    assert sorted(record.labels) == [1, 3]
    for v in (1, 3):
        assert record.labels[v] == label_case(label == v, (1.0, 2.0, 0.5))
    assert record.labels[1].components == 2
    assert samples[0].shape == (100,)
    assert set(samples[0].tolist()) <= set(image[0][label > 0].tolist())
