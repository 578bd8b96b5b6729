"""The lecture's receptive-field toy problem: lesions that are malign only when ringed.

Each ``size``ⁿ image holds one ``lesion``ⁿ bright square (cube in 3D) on a noisy background.
With probability ``malign_fraction`` the lesion is malign and is then surrounded by a one-voxel
ring (a square outline, or a cubic shell in 3D) at Chebyshev distance ``ring_distance`` from its
border; benign lesions have no ring.  The label marks malign lesion voxels only, so a network
must see ``lesion + 2·ring_distance`` voxels of context to tell the two apart.

    >>> rng = np.random.default_rng(0)
    >>> image, label, malign = make_case(rng, dims=2)
    >>> image.shape, label.dtype, int(label.sum()) in (0, 9)
    ((32, 32), dtype('uint8'), True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from segcli.atomic import atomic_open

__all__ = [
    "NESTED_LABELS",
    "NESTED_REGIONS",
    "SynthCase",
    "generate",
    "generate_nested",
    "make_case",
    "make_nested_case",
    "write_dataset",
]

#: label values of the nested toy (:func:`make_nested_case`)
NESTED_LABELS = {0: "background", 1: "organ", 2: "lesion"}
#: its regions, outer first (the spec's ``regions`` key; see :mod:`segcli.labels`)
NESTED_REGIONS = {"organ": [1, 2], "lesion": [2]}


@dataclass(frozen=True)
class SynthCase:
    name: str
    image: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint8]
    malign: bool


def _check(
    dims: int, size: int, lesion: int, ring_distance: int, cases: int = 1, noise: float = 0.0
) -> None:
    """Raise ``ValueError`` naming the parameter unless the toy problem can be drawn."""
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if lesion < 1 or ring_distance < 1:
        raise ValueError("lesion and ring_distance must be at least 1")
    span = lesion + 2 * ring_distance
    if span > size:
        raise ValueError(
            f"a lesion of {lesion} with its ring at distance {ring_distance} spans {span} voxels "
            f"and does not fit an image of size {size}; use --size {span} or more"
        )


def make_case(
    rng: np.random.Generator,
    dims: int = 2,
    size: int = 32,
    lesion: int = 3,
    ring_distance: int = 5,
    malign: bool | None = None,
    noise: float = 0.1,
    malign_fraction: float = 0.5,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], bool]:
    """One toy image, its label and whether its lesion is malign.

    Returns:
        image: float32 ``(size,)*dims``, background ~ N(0, noise²), lesion and ring at 1.
        label: uint8, 1 on malign lesion voxels, 0 elsewhere.
        malign: whether the lesion is ringed.
    """
    _check(dims, size, lesion, ring_distance)
    if malign is None:
        malign = bool(rng.random() < malign_fraction)
    shape = (size,) * dims
    image = rng.normal(0.0, noise, size=shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    # lesion start per axis, so that the (possible) ring stays inside the image
    lo, hi = ring_distance, size - lesion - ring_distance
    start = rng.integers(lo, hi + 1, size=dims)
    box = tuple(slice(int(s), int(s) + lesion) for s in start)
    image[box] = 1.0
    if malign:
        label[box] = 1
        outer = tuple(slice(int(s) - ring_distance, int(s) + lesion + ring_distance) for s in start)
        inner = tuple(slice(sl.start + 1, sl.stop - 1) for sl in outer)
        ring = np.zeros(shape, dtype=bool)
        ring[outer] = True
        ring[inner] = False
        image[ring] = 1.0
    return image, label, malign


def generate(
    cases: int,
    dims: int = 2,
    size: int = 32,
    lesion: int = 3,
    ring_distance: int = 5,
    seed: int = 0,
    noise: float = 0.1,
    malign_fraction: float = 0.5,
    prefix: str = "ring",
) -> list[SynthCase]:
    """``cases`` toy cases, deterministic in ``seed``; names ``ring_000``, ``ring_001``, ...

    Raises:
        ValueError: ``cases`` < 1, ``noise`` < 0, ``dims`` not 2 or 3, or a lesion and ring
            that do not fit ``size``.
    """
    _check(dims, size, lesion, ring_distance, cases, noise)
    rng = np.random.default_rng(seed)
    width = max(3, len(str(cases - 1)))
    out = []
    for i in range(cases):
        image, label, malign = make_case(
            rng, dims, size, lesion, ring_distance, noise=noise, malign_fraction=malign_fraction
        )
        out.append(SynthCase(f"{prefix}_{i:0{width}d}", image, label, malign))
    return out


def _ball(shape: tuple[int, ...], centre: npt.NDArray[np.float64], radius: float) -> np.ndarray:
    grids = np.indices(shape, dtype=np.float64)
    offset = grids - centre.reshape((-1,) + (1,) * len(shape))
    return np.sqrt((offset**2).sum(0)) <= radius


def make_nested_case(
    rng: np.random.Generator,
    dims: int = 2,
    size: int = 32,
    noise: float = 0.1,
    max_lesions: int = 2,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """One case of the nested toy: lesions inside an organ, and look-alikes outside it.

    The organ is a ball (disk in 2D) of radius ``size/5 .. size/3.5`` at intensity 0.5; inside it
    lie 0..``max_lesions`` lesions, balls of radius 2–3 at intensity 1.0, each at least
    one voxel from the organ's border.  With probability 1/2 a *decoy* (a bright ball of the
    same kind) lies outside the organ: by definition it is no lesion, so a network must see
    the organ around a bright spot to label it.

    Returns:
        image: float32 ``(size,)*dims``: background ~ N(0, noise²) plus the structures.
        label: uint8, 0 background, 1 organ (outside lesions), 2 lesion (nested in the organ).
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if size < 16:
        raise ValueError(f"the nested toy needs --size 16 or more, got {size}")
    shape = (size,) * dims
    image = rng.normal(0.0, noise, size=shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    radius = rng.uniform(size / 5, size / 3.5)
    centre = rng.uniform(radius + 1, size - radius - 2, size=dims)
    organ = _ball(shape, centre, radius)
    image[organ] += 0.5
    label[organ] = 1
    interior = _ball(shape, centre, radius - 1.0)  # lesions keep one organ voxel around them
    for _ in range(int(rng.integers(0, max_lesions + 1))):
        r = rng.uniform(2.0, 3.0)
        reach = max(radius - r - 1.0, 0.0)
        direction = rng.normal(size=dims)
        direction /= np.linalg.norm(direction) + 1e-12
        where = centre + direction * reach * np.sqrt(rng.uniform())
        lesion = _ball(shape, where, r) & interior
        image[lesion] = 1.0 + rng.normal(0.0, noise, size=int(lesion.sum())).astype(np.float32)
        label[lesion] = 2
    if rng.random() < 0.5:  # a decoy outside the organ, if one fits
        far = ~_ball(shape, centre, radius + 5.0)
        inner = tuple(slice(3, size - 3) for _ in range(dims))
        room = np.zeros(shape, dtype=bool)
        room[inner] = far[inner]
        spots = np.argwhere(room)
        if len(spots):
            spot = spots[int(rng.integers(len(spots)))].astype(np.float64)
            decoy = _ball(shape, spot, rng.uniform(1.5, 2.5))
            image[decoy] = 1.0 + rng.normal(0.0, noise, size=int(decoy.sum())).astype(np.float32)
    return image, label


def generate_nested(
    cases: int, dims: int = 2, size: int = 32, seed: int = 0, noise: float = 0.1
) -> list[SynthCase]:
    """``cases`` nested-toy cases (:func:`make_nested_case`), names ``nested_000``, ...

    ``SynthCase.malign`` is True when the case holds at least one lesion.

    Raises:
        ValueError: ``cases`` < 1, ``noise`` < 0, ``dims`` not 2 or 3, or ``size`` < 16.
    """
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    width = max(3, len(str(cases - 1)))
    out = []
    for i in range(cases):
        image, label = make_nested_case(rng, dims, size, noise)
        out.append(SynthCase(f"nested_{i:0{width}d}", image, label, bool((label == 2).any())))
    return out


def write_dataset(
    out: str | Path,
    cases: list[SynthCase],
    spacing: float = 1.0,
    description: str = "",
    nested: bool = False,
) -> Path:
    """Write cases in the nnU-Net/MSD layout (imagesTr/<case>_0000.nii.gz, labelsTr/, dataset.json)."""
    from segcli.io.images import make_geometry, write_image

    out = Path(out)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for case in cases:
        geometry = make_geometry(case.image.shape, (spacing,) * case.image.ndim)
        write_image(out / "imagesTr" / f"{case.name}_0000.nii.gz", case.image, geometry)
        write_image(out / "labelsTr" / f"{case.name}.nii.gz", case.label, geometry)
        training.append(
            {
                "image": f"./imagesTr/{case.name}_0000.nii.gz",
                "label": f"./labelsTr/{case.name}.nii.gz",
                "malign": case.malign,
            }
        )
    meta: dict[str, object] = {
        "name": "segcli-ring-lesions",
        "description": description
        or "The lecture's toy problem: lesions are malign (labelled) only when ringed.",
        "tensorImageSize": f"{cases[0].image.ndim}D" if cases else "2D",
        "channel_names": {"0": "synthetic"},
        "modality": {"0": "synthetic"},
        "labels": {"0": "background", "1": "malign"},
        "numTraining": len(cases),
        "numTest": 0,
        "file_ending": ".nii.gz",
        "training": training,
    }
    if nested:
        meta["name"] = "segcli-nested"
        meta["description"] = description or (
            "Nested toy: lesions (2) inside an organ (1), bright decoys outside it (0)."
        )
        meta["labels"] = {str(k): v for k, v in NESTED_LABELS.items()}
        meta["regions"] = NESTED_REGIONS
        for entry in training:
            entry["lesion"] = entry.pop("malign")
    with atomic_open(out / "dataset.json", "w", what="dataset.json") as handle:
        json.dump(meta, handle, indent=1)
    return out
