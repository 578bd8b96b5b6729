"""The preprocessing cache: every case cropped, resampled and indexed once, read patch by patch.

    >>> from segcli.data.cache import CacheSettings, build_cache
    >>> settings = CacheSettings.of(exp.data, spacing=(2.0, 0.8, 0.8))
    >>> report = build_cache(exp.data, names, settings, workers=2)   # rebuilds only what changed
    >>> case = report.cases["liver_001"]
    >>> case.open_image()[:, 10:66, 0:192, 0:192]                     # reads one patch from disk

What a cached case is (nnU-Net v2's preprocessing, in segcli's order):

1. **crop** to the bounding box of the voxels where any channel is non-zero (``data.crop_nonzero``;
   the box is kept, so predict can paste its label map back into the full grid);
2. the **raw** intensities' per-channel statistics (mean, std, min, max) are computed on that
   crop (what per-volume normalisation uses, as if it ran before resampling);
3. **resample** to the target spacing (image and label, ``data.resample_order``,
   ``data.label_resampling``);
4. the **foreground locations** (up to 10,000 voxels per class,
   :func:`segcli.data.sampling.foreground_locations`), the voxel count of every label value and
   up to 10,000 foreground intensity samples per channel (for ``normalization: ct_auto``) are
   computed on the resampled case.

The cache stores raw (resampled) intensities, not normalised ones: normalisation is one
clip-and-affine per channel (:func:`segcli.data.preprocessing.normalize_with`) applied to each
patch as it is read, with the case's own statistics or the dataset's ``ct_auto`` statistics.
One cache therefore serves every normalisation, every split, fold and study variant; its key
holds only what changes the stored arrays.

On disk (format chosen by measurement, docs/benchmarks.md, "preprocessing cache"): per case an
uncompressed ``<case>_image.npy`` (float32 ``(C, *spatial)``), ``<case>_label.npy`` (the
smallest unsigned type), ``<case>_extra.npz`` (locations and samples) and, written last,
``<case>.json``: the index entry with the source files' sizes and modification times, the
statistics, the crop box, both grids and each data file's size, modification time and CRC-32.
A case counts as cached only when its entry exists, names this preprocessing version and the
current source files, and its data files have the recorded sizes and times; anything else
(a truncated, edited or deleted file, a changed input) is rebuilt, never read.  Loading a whole
case (memory mode, validation) also checks the CRC-32 of what it read.

Concurrency: building holds an exclusive ``fcntl`` lock on the cache folder, so a second
process waits and then reuses what the first built.  Every file is written under a temporary
name and renamed, so an interrupted build (Ctrl-C, a full disk) leaves complete cases only and
the next run resumes with the rest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from segcli.config.schema import DataSpec
from segcli.data.preprocessing import ChannelStats, crop_geometry, nonzero_bbox
from segcli.errors import DataError
from segcli.io.images import ImageGeometry

__all__ = [
    "CACHE_ENV",
    "PREPROCESS_VERSION",
    "CacheReport",
    "CacheSettings",
    "CachedCase",
    "build_cache",
    "cache_folder",
    "default_workers",
    "preprocess_arrays",
]

#: bump when the stored arrays or index entries change for the same settings (old caches are
#: then rebuilt).  2: the stored image's own per-channel minimum ("minimum")
PREPROCESS_VERSION = 2

#: environment variable naming the cache root (else ``~/.cache/segcli/preprocessed``)
CACHE_ENV = "SEGCLI_CACHE"

#: foreground intensity samples kept per case and channel (for ``ct_auto``; nnU-Net: 10,000)
SAMPLES_PER_CASE = 10_000

Progress = Callable[[Iterable[Any]], Iterable[Any]]

#: with the default worker count, inputs smaller than this are preprocessed in this process
#: (starting worker processes costs seconds; a toy dataset takes less)
IN_PROCESS_BYTES = 32 * 2**20


# --------------------------------------------------------------------------- settings, folders


@dataclass(frozen=True)
class CacheSettings:
    """Everything besides the source files that changes the cached arrays."""

    crop_nonzero: bool
    spacing: tuple[float, ...] | None
    resample_order: int
    label_resampling: str

    @classmethod
    def of(cls, data: DataSpec, spacing: Sequence[float] | None) -> CacheSettings:
        """The settings of ``data`` with the resolved target ``spacing`` (None: keep)."""
        return cls(
            crop_nonzero=bool(data.crop_nonzero),
            spacing=None if spacing is None else tuple(float(s) for s in spacing),
            resample_order=int(data.resample_order),
            label_resampling=str(data.label_resampling),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": PREPROCESS_VERSION,
            "crop_nonzero": self.crop_nonzero,
            "spacing": None if self.spacing is None else [round(s, 9) for s in self.spacing],
            "resample_order": self.resample_order,
            "label_resampling": self.label_resampling,
        }

    def key(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_root(data: DataSpec) -> Path:
    """``data.cache_dir``, else ``$SEGCLI_CACHE``, else ``~/.cache/segcli/preprocessed``."""
    if data.cache_dir:
        return Path(data.cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "segcli" / "preprocessed"


def cache_folder(data: DataSpec, settings: CacheSettings) -> Path:
    """``<root>/<dataset>-<hash of its absolute path>/<settings key>``."""
    assert data.root is not None
    root = Path(data.root).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name) or "dataset"
    where = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return cache_root(data) / f"{slug}-{where}" / settings.key()


def default_workers() -> int:
    """Worker processes for preprocessing: the cores, at most 4 (each holds one case)."""
    return max(1, min(os.cpu_count() or 1, 4))


# --------------------------------------------------------------------------- one cached case


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


@dataclass
class CachedCase:
    """One case of the cache: where its files are and what the index says about them.

    Attributes:
        name: case name.
        folder: the cache folder.
        shape: ``(C, *spatial)`` of the stored image.
        spacing: mm per axis of the stored grid.
        geometry: the stored (cropped, resampled) grid.
        source: the input image's grid (before cropping).
        bbox: the crop box in the source grid, ``((start, stop), ...)``.
        stats: the raw crop's per-channel statistics (before resampling).
        label_counts: voxels per label value of the stored label map.
        entry: the whole index entry (as in ``<case>.json``).
    """

    name: str
    folder: Path
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    geometry: ImageGeometry
    source: ImageGeometry
    bbox: tuple[tuple[int, int], ...]
    stats: ChannelStats
    label_counts: dict[int, int]
    entry: dict[str, Any] = field(repr=False)

    @property
    def minimum(self) -> tuple[float, ...]:
        """The stored (resampled) raw image's per-channel minimum."""
        return tuple(float(v) for v in self.entry["minimum"])

    @classmethod
    def from_entry(cls, folder: Path, entry: dict[str, Any]) -> CachedCase:
        def geometry(d: dict[str, Any]) -> ImageGeometry:
            return ImageGeometry(
                tuple(int(v) for v in d["size"]),
                tuple(float(v) for v in d["spacing"]),
                tuple(float(v) for v in d["origin"]),
                tuple(float(v) for v in d["direction"]),
            )

        grid = geometry(entry["geometry"])
        return cls(
            name=entry["name"],
            folder=folder,
            shape=tuple(int(v) for v in entry["shape"]),
            spacing=grid.spacing,
            geometry=grid,
            source=geometry(entry["source"]),
            bbox=tuple((int(a), int(b)) for a, b in entry["bbox"]),
            stats=ChannelStats(**{k: tuple(v) for k, v in entry["stats"].items()}),
            label_counts={int(k): int(v) for k, v in entry["label_counts"].items()},
            entry=entry,
        )

    # files
    def path(self, kind: str) -> Path:
        return self.folder / self.entry["files"][kind]["name"]

    @property
    def label_values(self) -> tuple[int, ...]:
        """The values present in the stored label map, sorted."""
        return tuple(sorted(v for v, n in self.label_counts.items() if n))

    @property
    def nbytes(self) -> int:
        """Bytes of the image and label files."""
        return sum(int(self.entry["files"][k]["size"]) for k in ("image", "label"))

    def open_image(self) -> np.memmap:
        """The stored raw image as a read-only memory map (read only what you slice)."""
        return np.load(self.path("image"), mmap_mode="r")

    def open_label(self) -> np.memmap:
        return np.load(self.path("label"), mmap_mode="r")

    def extras(self) -> tuple[dict[int, npt.NDArray[np.int64]], list[npt.NDArray[np.float32]]]:
        """(foreground locations ``{class: (N, dims)}``, foreground samples per channel)."""
        with np.load(self.path("extra")) as npz:
            locations = {
                int(k[4:]): npz[k].astype(np.int64) for k in npz.files if k.startswith("loc_")
            }
            samples = [npz[f"samples_{c}"] for c in range(self.shape[0])]
        return locations, samples

    def load(self, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Read the whole raw image and label into memory, checking their CRC-32.

        Raises:
            DataError: a file changed since it was indexed (rebuild with ``segcli preprocess``).
        """
        image, label = np.load(self.path("image")), np.load(self.path("label"))
        if verify:
            for kind, array in (("image", image), ("label", label)):
                if _crc(array) != int(self.entry["files"][kind]["crc32"]):
                    raise DataError(
                        f"case '{self.name}': cached {kind} {self.path(kind)} does not match its "
                        "checksum (edited or damaged since it was written); run `segcli "
                        "preprocess` again to rebuild it"
                    )
        return image, label

    def fresh(self, sources: Sequence[Path]) -> bool:
        """The entry is of this version, names ``sources`` as they are now, and every data
        file has its recorded size and modification time."""
        if self.entry.get("version") != PREPROCESS_VERSION:
            return False
        try:
            now = [{"path": str(p), **_stat(p)} for p in sources]
            if now != self.entry["sources"]:
                return False
            for record in self.entry["files"].values():
                st = _stat(self.folder / record["name"])
                if st["size"] != record["size"] or st["mtime_ns"] != record["mtime_ns"]:
                    return False
        except OSError:
            return False
        return True


def read_entry(folder: Path, name: str) -> CachedCase | None:
    """The index entry of ``name`` in ``folder``, or None when absent or unreadable."""
    path = folder / f"{name}.json"
    try:
        return CachedCase.from_entry(folder, json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- the work per case


def preprocess_arrays(
    image: np.ndarray,
    label: np.ndarray | None,
    geometry: ImageGeometry,
    settings: CacheSettings,
) -> tuple[np.ndarray, np.ndarray | None, ImageGeometry, tuple[tuple[int, int], ...], ChannelStats]:
    """Crop, measure and resample one case (raw intensities; see the module docstring).

    Args:
        image: ``(C, *spatial)`` raw intensities.
        label: ``(*spatial)`` integer label map, or None.
        geometry: the image's grid.

    Returns:
        ``(image, label, grid, bbox, stats)``: float32 image and label on the new ``grid``,
        the crop box in the source grid and the cropped raw image's statistics.
    """
    bbox = (
        nonzero_bbox(image)
        if settings.crop_nonzero
        else tuple((0, int(s)) for s in image.shape[1:])
    )
    region = tuple(slice(a, b) for a, b in bbox)
    if any(b - a != s for (a, b), s in zip(bbox, image.shape[1:], strict=True)):
        image = image[(slice(None), *region)]
        label = None if label is None else label[region]
        geometry = crop_geometry(geometry, bbox)
    image = np.ascontiguousarray(image, dtype=np.float32)
    stats = ChannelStats.of(image)
    if settings.spacing is not None:
        from segcli.data.resample import resample_case

        if len(settings.spacing) != geometry.dims:
            raise DataError(
                f"the image has {geometry.dims} axes {geometry.size} but data.spacing "
                f"{list(settings.spacing)} has {len(settings.spacing)} entries"
            )
        image, label, geometry = resample_case(
            image, label, geometry, settings.spacing, settings.resample_order,
            settings.label_resampling,
        )  # fmt: skip
    return image, label, geometry, bbox, stats


def _foreground_samples(
    image: np.ndarray, mask: np.ndarray, name: str
) -> list[npt.NDArray[np.float32]]:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    out = []
    count = int(mask.sum())
    pick = None
    if count > SAMPLES_PER_CASE:
        pick = np.sort(rng.choice(count, SAMPLES_PER_CASE, replace=False))
    for c in range(image.shape[0]):
        values = image[c][mask]
        out.append((values if pick is None else values[pick]).astype(np.float32))
    return out


def _save(folder: Path, name: str, writer: Callable[[Any], None]) -> dict[str, Any]:
    """Write through ``writer(handle)`` to a temp file, rename it to ``name``; its record."""
    target = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            writer(handle)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"name": name, **_stat(target)}


def _geometry_dict(g: ImageGeometry) -> dict[str, list[float]]:
    return {
        "size": list(g.size),
        "spacing": list(g.spacing),
        "origin": list(g.origin),
        "direction": list(g.direction),
    }


def _build_case(
    folder: Path, name: str, images: tuple[Path, ...], label_path: Path | None,
    settings: CacheSettings,
) -> dict[str, Any]:  # fmt: skip
    """Preprocess one case into ``folder`` and return its index entry (not yet written).

    Runs in a worker process.  Raises DataError naming the case (unreadable input, a full
    disk); leaves no file of its own behind on any error.
    """
    from segcli.data.sampling import foreground_locations
    from segcli.io.images import read_image, read_label

    sources = [*images, *([label_path] if label_path is not None else [])]
    stamps = [{"path": str(p), **_stat(p)} for p in sources]
    channels, geometry = [], None
    for path in images:
        array, geometry = read_image(path)
        channels.append(array)
    assert geometry is not None
    image = np.stack(channels, axis=0) if len(channels) > 1 else channels[0][None]
    del channels
    label = None
    if label_path is not None:
        label, _ = read_label(label_path)
        if tuple(label.shape) != tuple(geometry.size):
            raise DataError(
                f"case '{name}': label shape {label.shape} differs from image {geometry.size}"
            )
    source = geometry
    try:
        image, label, grid, bbox, stats = preprocess_arrays(image, label, geometry, settings)
    except DataError as exc:
        raise DataError(f"case '{name}': {exc}") from None
    if label is None:
        label = np.zeros(image.shape[1:], dtype=np.uint8)
    from segcli.data.resample import value_counts

    values, counts = value_counts(label)
    if values.size and int(values.min()) < 0:
        raise DataError(f"case '{name}': its label map has negative value {int(values.min())}")
    top = int(values.max()) if values.size else 0
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.int64) if top <= np.iinfo(t).max)
    label = label.astype(dtype, copy=False)
    locations = foreground_locations(label)
    # ct_auto samples: foreground voxels of the stored (resampled) raw image
    samples = _foreground_samples(image, label > 0, name)
    extra = {f"loc_{k}": v.astype(np.int32) for k, v in locations.items()}
    extra.update({f"samples_{c}": s for c, s in enumerate(samples)})
    written: list[Path] = []
    try:
        files = {}
        for kind, array in (("image", image), ("label", label)):
            record = _save(folder, f"{name}_{kind}.npy", lambda h, a=array: np.save(h, a))
            record["crc32"] = _crc(array)
            written.append(folder / record["name"])
            files[kind] = record
        files["extra"] = _save(folder, f"{name}_extra.npz", lambda h: np.savez(h, **extra))
        written.append(folder / files["extra"]["name"])
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise DataError(
            f"case '{name}': cannot write the preprocessing cache in {folder} ({why})"
        ) from None
    return {
        "version": PREPROCESS_VERSION,
        "name": name,
        "sources": stamps,
        "settings": settings.as_dict(),
        "shape": list(image.shape),
        "geometry": _geometry_dict(grid),
        "source": _geometry_dict(source),
        "bbox": [list(b) for b in bbox],
        "stats": stats.as_dict(),
        # the stored (resampled) image's minimum: what patches past its edge are padded with
        # (cubic resampling can undershoot the raw minimum of "stats")
        "minimum": [float(v) for v in image.reshape(image.shape[0], -1).min(axis=1)]
        if image.size
        else [0.0] * image.shape[0],
        "label_counts": {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)},
        "files": files,
    }


def _write_entry(folder: Path, entry: dict[str, Any]) -> None:
    name = entry["name"]
    try:
        _save(folder, f"{name}.json", lambda h: h.write(json.dumps(entry, indent=1).encode()))
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise DataError(
            f"case '{name}': cannot write the preprocessing cache in {folder} ({why})"
        ) from None


# --------------------------------------------------------------------------- the whole cache


@dataclass
class CacheReport:
    """What :func:`build_cache` found and did.

    Attributes:
        folder: the cache folder.
        cases: name → cached case, in the order asked.
        built: names preprocessed now.
        reused: names found fresh.
        seconds: wall time (waiting for another process included).
        waited: seconds spent waiting for another process's build.
    """

    folder: Path
    cases: dict[str, CachedCase]
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0
    waited: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cases.values())

    def summary(self) -> str:
        return (
            f"preprocessing cache {self.folder}: {len(self.cases)} case(s), "
            f"{len(self.built)} built, {len(self.reused)} reused, "
            f"{self.nbytes / 2**20:,.0f} MiB, in {self.seconds:.1f} s"
            + (f" (waited {self.waited:.0f} s for another process)" if self.waited >= 1 else "")
        )


@contextlib.contextmanager
def _locked(folder: Path, on_wait: Callable[[], None] | None) -> Iterator[float]:
    """Hold an exclusive lock on ``folder``; yields the seconds spent waiting for it."""
    import fcntl

    path = folder / ".lock"
    handle = open(path, "a+b")  # noqa: SIM115 - held for the duration of the build
    waited = 0.0
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            started = time.perf_counter()
            fcntl.flock(handle, fcntl.LOCK_EX)
            waited = time.perf_counter() - started
        yield waited
    finally:
        handle.close()  # releases the lock


def _sources(case: Any) -> tuple[Path, ...]:
    return (*case.images, *([case.label] if case.label is not None else []))


def _write_settings(folder: Path, settings: CacheSettings, root: str) -> None:
    path = folder / "settings.json"
    if not path.exists():
        body = {**settings.as_dict(), "dataset": str(Path(root).resolve())}
        _save(folder, "settings.json", lambda h: h.write(json.dumps(body, indent=1).encode()))


def build_cache(
    data: DataSpec,
    names: Sequence[str],
    settings: CacheSettings,
    workers: int | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
) -> CacheReport:
    """Make sure every case of ``names`` (of ``data.root``) is cached and fresh; return them.

    Only missing or stale cases are preprocessed, in ``workers`` processes (0: in this
    process).  Safe to run from several processes at once (they take turns on a lock), and to
    interrupt (complete cases are kept).

    Args:
        data: the ``data:`` section (``root``, ``cache_dir``).
        names: the case names wanted.
        settings: :meth:`CacheSettings.of` the spec and its resolved spacing.
        workers: processes; None = :func:`default_workers`, or none for inputs smaller than
            :data:`IN_PROCESS_BYTES`.
        progress: wraps the iteration over the cases built (a progress bar).
        on_wait: called once when another process holds the lock.

    Raises:
        DataError: missing dataset or case, unreadable input, an unwritable cache folder or a
            full disk — naming the case; the cases finished before stay cached.
    """
    from segcli.io.dataset import find_cases

    started = time.perf_counter()
    if data.root is None:
        raise DataError("the preprocessing cache needs data.root (a dataset folder)")
    folder = cache_folder(data, settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{folder}: cannot create the preprocessing cache ({exc.strerror or exc}); set "
            f"data.cache_dir or ${CACHE_ENV} to a writable folder"
        ) from None
    found = {case.name: case for case in find_cases(data.root, "Tr", check_geometry=False)}
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{data.root}: case '{missing[0]}' not found in imagesTr/")
    report = CacheReport(folder=folder, cases={})
    entries = {n: read_entry(folder, n) for n in names}
    stale = [n for n in names if not (entries[n] and entries[n].fresh(_sources(found[n])))]
    if stale:
        with _locked(folder, on_wait) as waited:
            report.waited = waited
            for tmp in folder.glob(".*.tmp"):  # left by an interrupted build
                tmp.unlink(missing_ok=True)
            _write_settings(folder, settings, data.root)
            entries.update({n: read_entry(folder, n) for n in stale})  # another process's work
            stale = [n for n in stale if not (entries[n] and entries[n].fresh(_sources(found[n])))]
            for name in stale:
                (folder / f"{name}.json").unlink(missing_ok=True)
            jobs = [(folder, n, found[n].images, found[n].label, settings) for n in stale]
            if workers is None:  # processes pay for their start-up only on real work
                small = sum(p.stat().st_size for n in stale for p in _sources(found[n]))
                workers = 0 if small < IN_PROCESS_BYTES else default_workers()
            for entry in _run(jobs, workers, progress):
                _write_entry(folder, entry)
                entries[entry["name"]] = CachedCase.from_entry(folder, entry)
                report.built.append(entry["name"])
    report.reused = [n for n in names if n not in set(report.built)]
    report.cases = {n: entries[n] for n in names}  # type: ignore[misc]
    report.seconds = time.perf_counter() - started
    return report


def _run(jobs: list[tuple[Any, ...]], workers: int, progress: Progress | None) -> Iterator[Any]:
    """Yield each job's entry as it completes; the first error cancels the rest and is raised."""
    ticks = iter((progress or (lambda x: x))([job[1] for job in jobs]))  # the case names
    if workers <= 0 or len(jobs) <= 1:
        for job in jobs:
            entry = _build_case(*job)
            next(ticks, None)
            yield entry
        return
    import multiprocessing

    # spawn-safe and free of the parent's threads (torch): a fresh interpreter per worker,
    # each resampling on one thread (the workers share the cores, as nnU-Net's do)
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=context, initializer=_one_thread
    )
    pending: set[Future[Any]] = set()
    queue = list(reversed(jobs))
    try:
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # bounded: memory stays per case
                pending.add(pool.submit(_build_case, *queue.pop()))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                entry = future.result()  # raises the worker's DataError
                next(ticks, None)
                yield entry
    except BaseException:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _one_thread() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def stats_from_cache(cases: Iterable[CachedCase]) -> dict[str, list[float]]:
    """``ct_auto``'s dataset statistics from the cached foreground samples of ``cases``."""
    from segcli.data.statistics import stats_from_samples

    per_channel: list[list[np.ndarray]] = []
    for case in cases:
        _, samples = case.extras()
        for c, values in enumerate(samples):
            if len(per_channel) <= c:
                per_channel.append([])
            per_channel[c].append(values.astype(np.float64))
    return stats_from_samples([np.concatenate(v) if v else np.array([]) for v in per_channel])
