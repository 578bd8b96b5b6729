"""Tiny synthetic datasets for the planner tests (written in the MSD layout)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcli.io.images import make_geometry, write_image


def blob_case(
    shape: Sequence[int], seed: int, radius: int = 3, value: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with one bright box labelled ``value`` (box edge 2·radius)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.2, size=tuple(shape)).astype(np.float32)
    label = np.zeros(tuple(shape), np.uint8)
    centre = [int(rng.integers(radius, max(radius + 1, s - radius))) for s in shape]
    box = tuple(slice(max(c - radius, 0), c + radius) for c in centre)
    label[box] = value
    image[box] += 2.0
    return image, label


def make_dataset(
    root: Path,
    cases: int = 6,
    shape: Sequence[int] = (16, 16, 16),
    spacing: Sequence[float] | None = None,
    channels: int = 1,
    channel_names: dict[str, str] | None = None,
    labels: dict[str, object] | None = None,
    radius: int = 3,
) -> Path:
    """Write ``cases`` blob cases (each channel a shifted copy of the image) to ``root``."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    geometry = make_geometry(shape, spacing or (1.0,) * len(shape))
    for i in range(cases):
        image, label = blob_case(shape, seed=i, radius=radius)
        for c in range(channels):
            write_image(root / "imagesTr" / f"case{i:02d}_{c:04d}.nii.gz", image + c, geometry)
        write_image(root / "labelsTr" / f"case{i:02d}.nii.gz", label, geometry)
    meta: dict[str, object] = {"name": "toy"}
    if channel_names is not None:
        meta["channel_names"] = channel_names
    if labels is not None:
        meta["labels"] = labels
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
