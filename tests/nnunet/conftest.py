"""Fixtures of the nnU-Net feature tests: an anisotropic toy dataset and checkpoint writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segcli.config import Experiment, from_dict
from segcli.io.images import ImageGeometry, make_geometry, write_image


def rotated_geometry(shape: tuple[int, ...], spacing: tuple[float, ...]) -> ImageGeometry:
    """A grid with a non-zero origin and a direction rotated about the last world axis."""
    dims = len(shape)
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.eye(dims)
    rot[:2, :2] = [[c, -s], [s, c]]
    return make_geometry(shape, spacing, (-10.0, 33.5, 4.25)[:dims], rot.ravel())


@pytest.fixture
def rotated() -> Callable[[tuple[int, ...], tuple[float, ...]], ImageGeometry]:
    return rotated_geometry


@pytest.fixture(scope="session")
def anisotropic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 cases, 3-D, spacings ~(4, 0.9, 0.9) mm (median exactly that), labels 0/1/2."""
    root = tmp_path_factory.mktemp("anisotropic")
    rng = np.random.default_rng(0)
    spacings = [(4.0, 0.9, 0.9), (3.0, 1.0, 1.0), (4.0, 0.8, 0.8), (5.0, 0.9, 0.9)]
    for i, spacing in enumerate(spacings):
        shape = (int(48 / spacing[0]), int(36 / spacing[1]), int(36 / spacing[2]))
        zz, yy, xx = np.meshgrid(
            *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
        )
        label = np.zeros(shape, np.uint8)
        label[((zz - 24) / 14) ** 2 + ((yy - 14) / 8) ** 2 + ((xx - 18) / 9) ** 2 <= 1] = 1
        label[((zz - 24) / 10) ** 2 + ((yy - 25) / 5) ** 2 + ((xx - 16) / 6) ** 2 <= 1] = 2
        image = 100.0 * label + rng.normal(0, 10, shape)
        geometry = rotated_geometry(shape, spacing)
        write_image(root / "imagesTr" / f"case_{i}_0000.nii.gz", image.astype(np.float32), geometry)
        write_image(root / "labelsTr" / f"case_{i}.nii.gz", label, geometry)
    return root


def experiment(tmp_path: Path, dims: int = 3, **sections: Any) -> Experiment:
    """A tiny CNN experiment (3 classes); sections are merged into the defaults."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"root": str(tmp_path / "unused"), "patch_size": [8] * dims},
        "model": {"arch": "cnn", "dims": dims, "filters": 3, "classes": 3, "layers": 2},
        "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0},
        "inference": {"batch_size": 4, "overlap": 0.5},
        "output": str(tmp_path / "runs"),
    }
    for key, value in sections.items():
        merge = isinstance(raw.get(key), dict) and isinstance(value, dict) and "arch" not in value
        raw[key] = {**raw[key], **value} if merge else value
    return from_dict(raw)


@pytest.fixture
def make_experiment() -> Callable[..., Experiment]:
    return experiment
