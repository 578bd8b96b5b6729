"""Dataset fingerprint: what ``segcli plan`` knows about a dataset before it plans anything.

    >>> from segcli.plan.fingerprint import extract_fingerprint, label_summary
    >>> fp = extract_fingerprint("data/Task04_Hippocampus", workers=2)
    >>> fp.median_spacing, fp.median_shape             # array axis order (z, y, x)
    >>> fp.intensities[0].percentile_99_5               # foreground intensity statistics
    >>> label_summary(fp, target_spacing=(1.0, 1.0, 1.0))[1].largest_extent_voxels

Per case (read in worker processes): the spacing, the shape and the shape after cropping to the
nonzero region (nnU-Net's ``crop_to_nonzero``: the bounding box of voxels that are nonzero in any
channel or labelled), foreground intensity samples per channel, and per label the voxel count,
the number of face-connected components (as ``segcli evaluate``'s ``cc_ref``), the bounding-box
extent of the largest component (voxels and mm) and the size of the smallest component.

Foreground intensities are sampled as nnU-Net v2 does (``collect_foreground_intensities``):
from the voxels with label > 0, with replacement, ``RandomState(1234)`` per case, an equal quota
per case.  nnU-Net's quota is 10⁸ voxels over the dataset; here it is :data:`SAMPLES_TOTAL`
(10⁶: the 0.5/99.5 percentiles of a million samples are within a small fraction of a percentile
of the exact ones, and the fingerprint stays a few megabytes of memory for any dataset size).

The record is written as JSON beside the spec (``EXP.fingerprint.json``) and read back with
:func:`load_fingerprint`, the one loader, which refuses other versions.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segcli.errors import DataError

__all__ = [
    "FINGERPRINT_VERSION",
    "CaseFingerprint",
    "ChannelIntensity",
    "Fingerprint",
    "LabelCase",
    "LabelSummary",
    "case_fingerprint",
    "channel_intensity",
    "dataset_description",
    "extract_fingerprint",
    "fingerprint_is_fresh",
    "label_summary",
    "load_fingerprint",
    "nonzero_bbox",
    "save_fingerprint",
]

#: bumped whenever a field changes meaning; :func:`load_fingerprint` refuses other versions
FINGERPRINT_VERSION = 1
#: foreground intensity samples over the whole dataset (nnU-Net: 10⁸), split equally per case
SAMPLES_TOTAL = 1_000_000
#: nnU-Net's seed for the per-case foreground samples
SAMPLE_SEED = 1234

Progress = Callable[[Iterable[Any], int], Iterable[Any]]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class LabelCase:
    """One label in one case.

    Attributes:
        voxels: voxels carrying the label.
        components: face-connected components (0 when the label is absent).
        largest_extent_voxels: bounding-box edge lengths of the largest component, per axis
            (array axis order, the case's own grid); zeros when absent.
        largest_extent_mm: the same in mm.
        smallest_voxels: voxels of the smallest component (0 when absent).
        smallest_mm3: its volume in mm³ (mm² for 2D images).
    """

    voxels: int
    components: int
    largest_extent_voxels: tuple[int, ...]
    largest_extent_mm: tuple[float, ...]
    smallest_voxels: int
    smallest_mm3: float


@dataclass(frozen=True)
class CaseFingerprint:
    """One case: geometry, crop and per-label statistics (``labels`` keys are label values)."""

    name: str
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    cropped_shape: tuple[int, ...]
    labels: dict[int, LabelCase]
    seconds: float = 0.0

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class ChannelIntensity:
    """Foreground intensity statistics of one channel over the sampled voxels of all cases.

    ``integer_valued`` and ``minimum_image`` (the lowest intensity of any whole image, not only
    the foreground) let the planner recognise Hounsfield units without a channel name.
    """

    name: str
    mean: float
    std: float
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    integer_valued: bool
    minimum_image: float
    samples: int


@dataclass(frozen=True)
class Fingerprint:
    """Everything the planner reads from a dataset (see the module docstring)."""

    root: str
    channels: tuple[str, ...]
    label_names: dict[int, str]
    cases: tuple[CaseFingerprint, ...]
    intensities: tuple[ChannelIntensity, ...]
    #: dataset.json names the labels (then any other value in a label map is an error)
    labels_declared: bool = False
    #: nnU-Net v2 region labels of dataset.json (name → the label values it unites)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    version: int = FINGERPRINT_VERSION
    seconds: float = 0.0

    @property
    def dims(self) -> int:
        return len(self.cases[0].shape)

    @property
    def spacings(self) -> npt.NDArray[np.float64]:
        """(cases, dims) spacings in mm."""
        return np.asarray([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def median_spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(self.spacings, axis=0))

    @property
    def median_shape(self) -> tuple[float, ...]:
        """Median shape on each case's own grid (voxels, array axis order)."""
        return tuple(float(v) for v in np.median([c.shape for c in self.cases], axis=0))

    @property
    def label_values(self) -> tuple[int, ...]:
        """Foreground label values: declared in dataset.json, else every value found."""
        if self.labels_declared:
            return tuple(sorted(v for v in self.label_names if v > 0))
        found = {v for c in self.cases for v in c.labels}
        return tuple(sorted(found))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["label_names"] = {str(k): v for k, v in self.label_names.items()}
        out["regions"] = {k: list(v) for k, v in self.regions.items()}
        for case in out["cases"]:
            case["labels"] = {str(k): v for k, v in case["labels"].items()}
        return out


def _tuple(values: Sequence[Any], kind: type) -> tuple[Any, ...]:
    return tuple(kind(v) for v in values)


def _from_dict(raw: dict[str, Any]) -> Fingerprint:
    cases = []
    for c in raw["cases"]:
        labels = {
            int(k): LabelCase(
                voxels=int(v["voxels"]),
                components=int(v["components"]),
                largest_extent_voxels=_tuple(v["largest_extent_voxels"], int),
                largest_extent_mm=_tuple(v["largest_extent_mm"], float),
                smallest_voxels=int(v["smallest_voxels"]),
                smallest_mm3=float(v["smallest_mm3"]),
            )
            for k, v in c["labels"].items()
        }
        cases.append(
            CaseFingerprint(
                name=str(c["name"]),
                spacing=_tuple(c["spacing"], float),
                shape=_tuple(c["shape"], int),
                cropped_shape=_tuple(c["cropped_shape"], int),
                labels=labels,
                seconds=float(c.get("seconds", 0.0)),
            )
        )
    return Fingerprint(
        root=str(raw["root"]),
        channels=_tuple(raw["channels"], str),
        label_names={int(k): str(v) for k, v in raw["label_names"].items()},
        cases=tuple(cases),
        intensities=tuple(ChannelIntensity(**i) for i in raw["intensities"]),
        labels_declared=bool(raw["labels_declared"]),
        regions={str(k): _tuple(v, int) for k, v in raw.get("regions", {}).items()},
        version=int(raw["version"]),
        seconds=float(raw.get("seconds", 0.0)),
    )


def save_fingerprint(fingerprint: Fingerprint, path: str | Path) -> None:
    """Write ``fingerprint`` as JSON, atomically (temp file + rename)."""
    from segcli.atomic import atomic_open

    with atomic_open(path, "w", what="the fingerprint") as handle:
        json.dump(fingerprint.to_dict(), handle, indent=1)
        handle.write("\n")


def load_fingerprint(path: str | Path) -> Fingerprint:
    """Read a fingerprint written by :func:`save_fingerprint`.

    Raises:
        DataError: unreadable, not a fingerprint, or written by another fingerprint version.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable fingerprint ({exc})") from None
    if not isinstance(raw, dict) or raw.get("version") != FINGERPRINT_VERSION:
        found = raw.get("version") if isinstance(raw, dict) else None
        raise DataError(
            f"{path}: fingerprint version {found!r}, this segcli writes "
            f"{FINGERPRINT_VERSION}; delete the file to extract it again"
        )
    try:
        return _from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed fingerprint ({exc!r}); delete it") from None


def dataset_files(root: str | Path) -> Iterator[Path]:
    """Every file whose change should invalidate a cached fingerprint of ``root``."""
    root = Path(root)
    for sub in ("imagesTr", "labelsTr"):
        folder = root / sub
        if folder.is_dir():
            yield folder  # adding or removing a file touches the folder
            yield from (p for p in folder.iterdir() if p.is_file())
    if (root / "dataset.json").is_file():
        yield root / "dataset.json"


def fingerprint_is_fresh(path: str | Path, root: str | Path) -> bool:
    """Whether the cached fingerprint at ``path`` is newer than every file of the dataset."""
    path = Path(path)
    if not path.is_file():
        return False
    stamp = path.stat().st_mtime_ns
    return all(p.stat().st_mtime_ns < stamp for p in dataset_files(root))


# --------------------------------------------------------------------------- dataset.json


def dataset_description(
    root: str | Path, num_channels: int
) -> tuple[tuple[str, ...], dict[int, str], bool, dict[str, tuple[int, ...]]]:
    """``(channel names, {label value: name}, labels declared, regions)`` from dataset.json.

    Accepts MSD's ``modality`` / ``{"0": "background"}`` and nnU-Net v2's ``channel_names`` /
    ``{"background": 0}``; a v2 label whose value is a list is a region (several values united).

    Raises:
        DataError: malformed ``labels``, or a channel count that disagrees with the files.
    """
    from segcli.io.dataset import read_dataset_json

    meta = read_dataset_json(root)
    where = Path(root) / "dataset.json"
    names_raw = meta.get("channel_names") or meta.get("modality") or {}
    channels = [f"channel{c}" for c in range(num_channels)]
    if names_raw:
        if not isinstance(names_raw, dict) or len(names_raw) != num_channels:
            given = len(names_raw) if isinstance(names_raw, dict) else names_raw
            raise DataError(
                f"{where}: channel_names/modality lists {given} channel(s) but the images have "
                f"{num_channels} (files <case>_0000 ... _{num_channels - 1:04d})"
            )
        for key, value in names_raw.items():
            if not str(key).isdigit() or int(key) >= num_channels:
                raise DataError(f"{where}: channel key {key!r} is not one of 0..{num_channels - 1}")
            channels[int(key)] = str(value)
    labels_raw = meta.get("labels")
    names: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    if labels_raw is None:
        return tuple(channels), names, False, regions
    if not isinstance(labels_raw, dict) or not labels_raw:
        raise DataError(f"{where}: 'labels' must be a non-empty mapping")
    for key, value in labels_raw.items():
        if str(key).isdigit():  # MSD: {"1": "tumour"}
            names[int(key)] = str(value)
        elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            names[int(value)] = str(key)  # nnU-Net v2: {"tumour": 1}
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            regions[str(key)] = tuple(int(v) for v in value)
            if len(value) == 1:
                names.setdefault(int(value[0]), str(key))
        else:
            raise DataError(f"{where}: labels entry {key!r}: {value!r} is not a label value")
    if regions or meta.get("regions_class_order") is not None:
        # nnU-Net v2's region form: every foreground entry is a region (an int is a region of
        # one value), in the file's order (outer first), written back by regions_class_order
        ordered: dict[str, tuple[int, ...]] = {}
        for key, value in labels_raw.items():
            if isinstance(value, list):
                ordered[str(key)] = tuple(int(v) for v in value)
            elif not str(key).isdigit() and int(value) != 0:
                ordered[str(key)] = (int(value),)
        regions = ordered
    for members in regions.values():  # region members are label values too
        for v in members:
            names.setdefault(v, f"label{v}")
    names.setdefault(0, "background")
    return tuple(channels), dict(sorted(names.items())), True, regions


# --------------------------------------------------------------------------- per case


def nonzero_bbox(
    image: npt.NDArray[np.floating], label: npt.NDArray[np.integer] | None = None
) -> tuple[slice, ...]:
    """Bounding box of voxels nonzero in any channel of ``image`` (C, *spatial) or labelled.

    An image without any nonzero voxel keeps its full extent (nnU-Net's ``crop_to_nonzero``).
    """
    mask = np.any(image != 0, axis=0)
    if label is not None:
        mask |= label > 0
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def label_case(mask: npt.NDArray[np.bool_], spacing: Sequence[float]) -> LabelCase:
    """Statistics of one binary mask on a grid of ``spacing`` (mm per axis)."""
    from scipy import ndimage

    dims = mask.ndim
    voxels = int(mask.sum())
    if voxels == 0:
        return LabelCase(0, 0, (0,) * dims, (0.0,) * dims, 0, 0.0)
    components, count = ndimage.label(mask)
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    box = ndimage.find_objects(components, max_label=largest)[largest - 1]
    assert box is not None
    extent = tuple(int(s.stop - s.start) for s in box)
    voxel_mm3 = float(np.prod(spacing))
    smallest = int(sizes.min())
    return LabelCase(
        voxels=voxels,
        components=int(count),
        largest_extent_voxels=extent,
        largest_extent_mm=tuple(float(e * s) for e, s in zip(extent, spacing, strict=True)),
        smallest_voxels=smallest,
        smallest_mm3=smallest * voxel_mm3,
    )


def case_fingerprint(
    name: str,
    image: npt.NDArray[np.floating],
    label: npt.NDArray[np.integer],
    spacing: Sequence[float],
    samples_per_case: int,
) -> tuple[CaseFingerprint, list[npt.NDArray[np.float32]], list[tuple[bool, float]]]:
    """Fingerprint of one loaded case.

    Args:
        name: case name.
        image: ``(C, *spatial)`` intensities.
        label: ``(*spatial)`` integer label map on the same grid.
        spacing: mm per axis, array axis order.
        samples_per_case: foreground intensity samples to draw per channel.

    Returns:
        ``(record, samples per channel, (integer-valued, minimum) per channel)``; no samples
        when the case has no foreground.
    """
    box = nonzero_bbox(image, label)
    cropped = tuple(int(s.stop - s.start) for s in box)
    from scipy import ndimage

    # each label's bounding box first: its components lie inside it, so the (costly) component
    # labelling runs on that crop only — large CT label maps with many small organs stay fast
    boxes = ndimage.find_objects(label.astype(np.int64, copy=False))
    labels = {
        v + 1: label_case(label[box] == v + 1, spacing)
        for v, box in enumerate(boxes)
        if box is not None
    }
    rng = np.random.RandomState(SAMPLE_SEED)
    foreground = label > 0
    samples = []
    for c in range(image.shape[0]):
        fg = image[c][foreground]
        samples.append(
            rng.choice(fg, samples_per_case, replace=True).astype(np.float32)
            if fg.size
            else np.zeros(0, np.float32)
        )
    kinds = [
        (bool(np.array_equal(image[c], np.round(image[c]))), float(image[c].min()))
        for c in range(image.shape[0])
    ]
    record = CaseFingerprint(
        name=name,
        spacing=tuple(float(s) for s in spacing),
        shape=tuple(int(s) for s in label.shape),
        cropped_shape=cropped,
        labels=labels,
    )
    return record, samples, kinds


def _read_case(
    args: tuple[str, tuple[str, ...], str, int],
) -> tuple[CaseFingerprint, list[npt.NDArray[np.float32]], list[tuple[bool, float]]]:
    """Worker: read one case's channels and label, fingerprint it (picklable arguments)."""
    from segcli.io.dataset import read_case
    from segcli.io.images import check_same_grid, read_label

    name, image_paths, label_path, samples = args
    started = time.perf_counter()
    files = tuple(Path(path) for path in image_paths)
    try:
        image, first = read_case(files, len(files))
    except DataError as exc:
        raise DataError(f"case '{name}': {exc}") from None
    label, lgeom = read_label(label_path)
    check_same_grid(lgeom, first, f"case '{name}': label {Path(label_path).name}")
    record, drawn, kinds = case_fingerprint(name, image, label, first.spacing, samples)
    seconds = time.perf_counter() - started
    record = CaseFingerprint(**{**record.__dict__, "seconds": seconds})
    return record, drawn, kinds


def channel_intensity(
    name: str, samples: npt.NDArray[np.floating], integer_valued: bool, minimum_image: float
) -> ChannelIntensity:
    """Statistics of one channel's pooled foreground samples (NaN when there are none)."""
    if samples.size == 0:
        nan = math.nan
        return ChannelIntensity(name, nan, nan, nan, nan, nan, nan, nan, integer_valued,
                                minimum_image, 0)  # fmt: skip
    values = samples.astype(np.float64)
    low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
    return ChannelIntensity(
        name=name,
        mean=float(values.mean()),
        std=float(values.std()),
        median=float(median),
        min=float(values.min()),
        max=float(values.max()),
        percentile_00_5=float(low),
        percentile_99_5=float(high),
        integer_valued=integer_valued,
        minimum_image=minimum_image,
        samples=int(values.size),
    )


def _map(
    func: Callable[[Any], Any], items: list[Any], workers: int, progress: Progress | None
) -> Iterator[Any]:
    wrap = progress or (lambda it, total: it)
    if workers <= 1 or len(items) <= 1:
        yield from wrap((func(i) for i in items), len(items))
        return
    import multiprocessing

    # spawn: forking a process that already runs torch threads can deadlock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from wrap(pool.map(func, items, chunksize=max(1, len(items) // (8 * workers))),
                        len(items))  # fmt: skip


def extract_fingerprint(
    root: str | Path, workers: int | None = None, progress: Progress | None = None
) -> Fingerprint:
    """Read every labelled training case of ``root`` and build its :class:`Fingerprint`.

    Args:
        root: dataset folder in the nnU-Net/MSD layout.
        workers: worker processes (default: the CPU count, at most 8).
        progress: ``progress(iterable, total)`` wrapper (a progress bar); None: silent.

    Raises:
        DataError: not a dataset, a case without label or channel, images and labels on
            different grids, images of different dimensionality, or (when dataset.json names
            the labels) a label value that dataset.json does not declare — each naming the case.
    """
    from segcli.io.dataset import find_cases

    started = time.perf_counter()
    root = Path(root)
    cases = find_cases(root, "Tr", require_labels=True, check_geometry=False)
    num_channels = len(cases[0].images)
    channels, names, declared, regions = dataset_description(root, num_channels)
    quota = max(1, SAMPLES_TOTAL // len(cases))
    jobs = [
        (c.name, tuple(str(p) for p in c.images), str(c.label), quota)
        for c in cases
        if c.label is not None
    ]
    if workers is None:  # a worker process costs an interpreter start: ≥ 8 cases per worker
        workers = max(1, min(os.cpu_count() or 1, 8, len(jobs) // 8))
    records: list[CaseFingerprint] = []
    pooled: list[list[npt.NDArray[np.float32]]] = [[] for _ in range(num_channels)]
    integer = [True] * num_channels
    minimum = [math.inf] * num_channels
    for record, drawn, kinds in _map(_read_case, jobs, workers, progress):
        records.append(record)
        for c in range(num_channels):
            pooled[c].append(drawn[c])
            integer[c] = integer[c] and kinds[c][0]
            minimum[c] = min(minimum[c], kinds[c][1])
    dims = {len(r.shape) for r in records}
    if len(dims) > 1:
        odd = next(r for r in records if len(r.shape) != len(records[0].shape))
        raise DataError(
            f"{root}: case '{odd.name}' has {len(odd.shape)} axes but case "
            f"'{records[0].name}' has {len(records[0].shape)}; all images need the same number"
        )
    if declared:
        for r in records:
            unknown = sorted(set(r.labels) - set(names))
            if unknown:
                raise DataError(
                    f"case '{r.name}': label value(s) {unknown} are not in {root / 'dataset.json'} "
                    f"'labels' (declared: {sorted(names)}); add them there or fix the label map"
                )
    else:
        found = sorted({v for r in records for v in r.labels})
        names = {0: "background", **{v: f"label{v}" for v in found}}
    intensities = tuple(
        channel_intensity(
            channels[c],
            np.concatenate(pooled[c]) if pooled[c] else np.zeros(0),
            integer[c],
            minimum[c],
        )
        for c in range(num_channels)
    )
    return Fingerprint(
        root=str(root),
        channels=channels,
        label_names=names,
        cases=tuple(records),
        intensities=intensities,
        labels_declared=declared,
        regions=regions,
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- per label


@dataclass(frozen=True)
class LabelSummary:
    """One label over the dataset (what the checks and rules read).

    Attributes:
        value, name: label value and its dataset.json name.
        voxel_share: labelled voxels / all voxels of all cases.
        cases_present: cases in which the label occurs.
        components_median, components_max: connected components per case (cases with it).
        largest_extent_mm: per axis, the largest bounding-box edge of any case's largest
            component (mm).
        largest_extent_voxels: that extent in voxels at the target spacing (rounded up).
        smallest_voxels_target: smallest component of any case, in voxels at the target
            spacing (its volume divided by the target voxel volume).
        median_voxels_target: median per-case volume of the label at the target spacing.
    """

    value: int
    name: str
    voxel_share: float
    cases_present: int
    components_median: float
    components_max: int
    largest_extent_mm: tuple[float, ...]
    largest_extent_voxels: tuple[int, ...]
    smallest_voxels_target: float
    median_voxels_target: float


def label_summary(fp: Fingerprint, target_spacing: Sequence[float]) -> dict[int, LabelSummary]:
    """Per-label summary at ``target_spacing`` (mm, array axis order); every foreground label."""
    total = sum(c.voxels for c in fp.cases)
    target_voxel = float(np.prod(target_spacing))
    out: dict[int, LabelSummary] = {}
    dims = fp.dims
    for value in fp.label_values:
        present = [c.labels[value] for c in fp.cases if value in c.labels]
        if not present:
            out[value] = LabelSummary(value, fp.label_names.get(value, f"label{value}"), 0.0, 0,
                                      0.0, 0, (0.0,) * dims, (0,) * dims, 0.0, 0.0)  # fmt: skip
            continue
        extent_mm = tuple(max(p.largest_extent_mm[a] for p in present) for a in range(dims))
        extent_vox = tuple(
            math.ceil(e / s - 1e-6) for e, s in zip(extent_mm, target_spacing, strict=True)
        )
        case_voxel = [float(np.prod(c.spacing)) for c in fp.cases if value in c.labels]
        volumes = [p.voxels * v / target_voxel for p, v in zip(present, case_voxel, strict=True)]
        out[value] = LabelSummary(
            value=value,
            name=fp.label_names.get(value, f"label{value}"),
            voxel_share=sum(p.voxels for p in present) / max(total, 1),
            cases_present=len(present),
            components_median=float(np.median([p.components for p in present])),
            components_max=max(p.components for p in present),
            largest_extent_mm=extent_mm,
            largest_extent_voxels=extent_vox,
            smallest_voxels_target=min(p.smallest_mm3 for p in present) / target_voxel,
            median_voxels_target=float(np.median(volumes)),
        )
    return out
