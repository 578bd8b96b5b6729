"""From ``data:`` in the spec to batches: case lists, splits, loading, patch dataset, loader.

    >>> names = list_case_names(exp.data, exp.seed)
    >>> train_names, val_names = split_cases(names, exp.data, exp.seed)
    >>> cases = load_cases(exp.data, train_names, exp.seed)
    >>> ds = PatchDataset(cases, exp.data.patch_size, exp.data.foreground_fraction,
    ...                   exp.data.augment, length=100 * 16, seed=exp.seed)
    >>> loader = build_loader(ds, batch_size=16, workers=2, seed=exp.seed)
    >>> ds.set_epoch(0); images, labels = next(iter(loader))   # (16, C, *patch), (16, *patch)

Reproducibility: item ``i`` of epoch ``e`` is drawn from its own generator
``SeedSequence([seed, e, i])``, and :func:`build_loader`'s sampler hands ``(epoch, i)`` to the
workers, so batches are identical for any number of workers, persistent or not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from segcli.config.schema import AugmentSpec, DataSpec
from segcli.data.augment import build_augment
from segcli.data.sampling import foreground_locations, grow_region, pad_region, patch_region
from segcli.errors import DataError, SpecError
from segcli.io.images import ImageGeometry, make_geometry
from segcli.registry import did_you_mean

__all__ = [
    "CaseData",
    "DiskCase",
    "PatchDataset",
    "build_loader",
    "list_case_names",
    "load_cases",
    "resolve_spacing",
    "split_cases",
]

Progress = Callable[[Iterable[Any]], Iterable[Any]]


@dataclass
class CaseData:
    """One loaded case.

    Attributes:
        name: case name (file stem without the channel suffix).
        image: float32 ``(C, *spatial)``, normalised.
        label: integer ``(*spatial)`` (0 = background), or None for unlabelled cases.
        spacing: mm per axis, array axis order.
        geometry: the image grid when read from disk (or the synthetic default grid).
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    geometry: ImageGeometry | None = None
    #: precomputed :func:`segcli.data.sampling.foreground_locations` of ``label`` (the cache's)
    foreground: dict[int, np.ndarray] | None = None

    @property
    def label_counts(self) -> dict[int, int]:
        """Voxels per label value (``{}`` without a label)."""
        if self.label is None or not self.label.size:
            return {}
        values, counts = np.unique(self.label, return_counts=True)
        return {int(v): int(n) for v, n in zip(values, counts, strict=True)}

    @property
    def label_values(self) -> tuple[int, ...]:
        """The values present in the label map, sorted."""
        return tuple(self.label_counts)

    def materialize(self) -> CaseData:
        """The case with its arrays in memory (this one)."""
        return self


class DiskCase:
    """A cached case whose patches are read from the preprocessing cache when drawn.

    Holds the index entry, the normalisation of the case and its foreground locations (a few
    hundred kB at most): nothing that grows with the image.  Each read opens the files as
    memory maps, copies the patch's region and closes them again, so pages a loader worker has
    read are the page cache's, not the worker's (its RSS stays flat).

    Attributes:
        name, spacing, geometry: as :class:`CaseData`.
        cached: the :class:`segcli.data.cache.CachedCase`.
        foreground: ``{class: (N, dims)}`` voxel coordinates.
    """

    def __init__(self, cached: Any, data_spec: DataSpec, stats: Any = None) -> None:
        _require_stats(data_spec, stats)
        self.cached = cached
        self.name = cached.name
        self.spacing = tuple(cached.spacing)
        self.geometry = cached.geometry
        self.scheme = data_spec.normalization
        self.window = tuple(data_spec.window)
        self.stats = stats
        self.foreground, _ = cached.extras()
        # the normalised stored image's per-channel minimum (every scheme is increasing): the
        # padding of memory mode, which takes the minimum of the resampled image it holds
        raw_min = np.array(cached.minimum, dtype=np.float32).reshape(-1, 1)
        self.minimum = self._normalise(raw_min)[:, 0]

    @property
    def channels(self) -> int:
        return int(self.cached.shape[0])

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.cached.shape[1:])

    @property
    def label_counts(self) -> dict[int, int]:
        return dict(self.cached.label_counts)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(self.cached.label_values)

    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        from segcli.data.preprocessing import normalize_with

        out = np.asarray(raw, dtype=np.float32)
        return normalize_with(out, self.scheme, self.cached.stats, self.window, self.stats, out=out)

    def read(self, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image ``(C, *region)`` and label of one region, fresh arrays."""
        image_map, label_map = self.cached.open_image(), self.cached.open_label()
        try:
            image = np.array(image_map[(slice(None), *region)], dtype=np.float32, copy=True)
            label = np.array(label_map[region], copy=True)
        finally:
            del image_map, label_map
        return self._normalise(image), label

    def materialize(self) -> CaseData:
        """The whole case in memory (validation reads one case at a time)."""
        image, label = self.cached.load()
        image = self._normalise(np.asarray(image, dtype=np.float32))
        return CaseData(self.name, image, label, self.spacing, self.geometry, self.foreground)


# --------------------------------------------------------------------------- case lists


def _synthetic_names(cases: int) -> list[str]:
    # the naming rule of segcli.data.synth.generate (ring_000, ...), without generating data
    width = max(3, len(str(cases - 1)))
    return [f"ring_{i:0{width}d}" for i in range(cases)]


def _missing_root_error(root: str) -> DataError:
    return DataError(
        f"data.root '{root}' does not exist; for the lecture's toy data run "
        f"`segcli synth {root}` first (or set data.synthetic instead of data.root)"
    )


def list_case_names(data_spec: DataSpec, seed: int) -> list[str]:
    """Sorted names of all labelled training cases named by ``data_spec``.

    ``seed`` is unused (names do not depend on it); it keeps the signature parallel to
    :func:`split_cases` and :func:`load_cases`.

    Raises:
        DataError: ``data.root`` missing or not in the dataset layout.
    """
    del seed
    if data_spec.synthetic is not None:
        return _synthetic_names(data_spec.synthetic.cases)
    from segcli.io.dataset import find_cases

    assert data_spec.root is not None  # DataSpec guarantees root or synthetic
    if not Path(data_spec.root).is_dir():
        raise _missing_root_error(data_spec.root)
    return sorted(case.name for case in find_cases(data_spec.root, "Tr"))


def _check_known(names: Sequence[str], known: set[str], key: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join(f"'{n}'" for n in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(
            f"data.{key}: unknown case(s) {listed}; the dataset has {len(known)} cases"
            f"{did_you_mean(unknown[0], sorted(known))}"
        )


def split_cases(
    names: Sequence[str], data_spec: DataSpec, seed: int
) -> tuple[list[str], list[str]]:
    """Split case names into (train, validation), deterministic in ``seed``.

    * cross-validation: fold ``data.fold`` of ``data.folds`` (:mod:`segcli.data.folds`: the
      dataset's ``splits_final.json``, else nnU-Net's K-fold rule);
    * explicit lists: ``data.train_cases`` and/or ``data.val_cases``; when only one is given the
      other is every remaining case.
    * otherwise: the names are shuffled by ``np.random.default_rng(seed)`` and
      ``round(val_fraction · n)`` go to validation — at least 1 when ``val_fraction > 0`` and
      there are ≥ 2 cases, and never all of them.

    Returns:
        ``(train, val)``, each sorted by name.

    Raises:
        DataError: no cases, unknown names in the explicit lists, a case in both lists, or an
            empty training list.
    """
    names = sorted(names)
    if not names:
        raise DataError("the dataset has no cases")
    if len(set(names)) != len(names):
        raise DataError("duplicate case names in the dataset")
    known = set(names)
    if data_spec.folds is not None:
        if data_spec.fold is None:
            raise SpecError(
                f"data.folds is {data_spec.folds}: name the fold to train (segcli train --fold k, "
                "or --fold all for every fold)"
            )
        from segcli.data.folds import dataset_splits

        splits, _ = dataset_splits(data_spec.root, names, data_spec.folds)
        return sorted(splits[data_spec.fold][0]), sorted(splits[data_spec.fold][1])
    train_list, val_list = data_spec.train_cases, data_spec.val_cases
    if train_list is not None or val_list is not None:
        for key, listed in (("train_cases", train_list), ("val_cases", val_list)):
            if listed is not None:
                _check_known(listed, known, key)
        if train_list is not None and val_list is not None:
            both = sorted(set(train_list) & set(val_list))
            if both:
                raise DataError(
                    "data.train_cases and data.val_cases share case(s) "
                    + ", ".join(f"'{n}'" for n in both[:5])
                    + "; a case may be in one list only"
                )
            train, val = sorted(set(train_list)), sorted(set(val_list))
        elif train_list is not None:
            train = sorted(set(train_list))
            val = [n for n in names if n not in set(train)]
        else:
            val = sorted(set(val_list or ()))
            train = [n for n in names if n not in set(val)]
    else:
        n = len(names)
        n_val = int(round(data_spec.val_fraction * n))
        if data_spec.val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        val_idx = set(order[:n_val].tolist())
        val = [names[i] for i in range(n) if i in val_idx]
        train = [names[i] for i in range(n) if i not in val_idx]
    if not train:
        raise DataError("no training cases left after the split; check data.val_cases")
    return train, val


# --------------------------------------------------------------------------- loading


def load_cases(
    data_spec: DataSpec,
    names: Sequence[str],
    seed: int,
    stats: dict[str, Sequence[float]] | None = None,
    progress: Progress | None = None,
    spacing: Sequence[float] | None = None,
    mode: str = "memory",
    workers: int | None = None,
) -> list[Any]:
    """Preprocess (crop, resample) and normalise the cases ``names`` (in that order).

    From ``data.root``: the cases go through the preprocessing cache
    (:func:`segcli.data.cache.build_cache`: built where missing or stale, in ``workers``
    processes, ``progress`` wrapping the cases built), then each is loaded into memory
    (``mode="memory"``: :class:`CaseData`) or left on disk (``"disk"``: :class:`DiskCase`,
    patches read when drawn).  From ``data.synthetic``: the toy cases are generated in memory
    with ``synthetic.seed`` (or ``seed`` when that is null), exactly as ``segcli synth`` would
    write them, and preprocessed alike.  Either way: crop to the non-zero region
    (``data.crop_nonzero``), resample to ``data.spacing`` (``data.resample_order``,
    ``data.label_resampling``), normalise with ``data.normalization`` (per-volume statistics
    of the cropped image; ``CaseData.spacing`` and ``geometry`` describe the new grid).

    Args:
        data_spec: the ``data:`` section.
        names: case names, e.g. one side of :func:`split_cases`.
        seed: the experiment seed (synthetic data without its own seed).
        stats: dataset statistics for ``normalization: ct_auto``.
        progress: optional wrapper around the iteration over cases preprocessed.
        spacing: the resolved target spacing when ``data.spacing`` is ``auto`` (what
            :func:`resolve_spacing` returns; ``segcli train`` resolves it once); None resolves
            it here.  Ignored when ``data.spacing`` is null.
        mode: ``memory`` or ``disk`` (``data.root`` only; synthetic cases are in memory).
        workers: preprocessing processes (None: :func:`segcli.data.cache.default_workers`).

    Raises:
        DataError: missing dataset, unknown case names, unreadable files, or images with
            another number of axes than ``data.spacing`` has entries.
    """
    target: tuple[float, ...] | None = None
    if data_spec.spacing is not None:
        target = tuple(spacing) if spacing is not None else resolve_spacing(data_spec, seed)
    if data_spec.synthetic is not None:
        return _load_synthetic(data_spec, names, seed, stats, target)
    report = preprocess(data_spec, names, target, workers=workers, progress=progress)
    return cases_from_cache(report, names, data_spec, stats, mode)


def preprocess(
    data_spec: DataSpec,
    names: Sequence[str],
    spacing: Sequence[float] | None,
    workers: int | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Any:
    """Build (or reuse) the preprocessing cache of ``names``; the
    :class:`segcli.data.cache.CacheReport`.  ``spacing``: the resolved target (None: keep);
    ``on_wait``: called when another process is building the same cache."""
    from segcli.data.cache import CacheSettings, build_cache

    root = data_spec.root
    assert root is not None
    if not Path(root).is_dir():
        raise _missing_root_error(root)
    from segcli.io.dataset import find_cases

    _check_known(names, {c.name for c in find_cases(root, "Tr", check_geometry=False)}, "root")
    settings = CacheSettings.of(data_spec, spacing)
    return build_cache(
        data_spec, names, settings, workers=workers, progress=progress, on_wait=on_wait
    )


#: ``data.cache: auto`` keeps the cases in memory up to this many bytes of cached arrays
MEMORY_CACHE_BYTES = 1 << 30


def cache_mode(data_spec: DataSpec, nbytes: int) -> str:
    """``memory`` or ``disk`` for ``data.cache`` and the cached arrays' total size."""
    if data_spec.cache != "auto":
        return data_spec.cache
    return "memory" if nbytes <= MEMORY_CACHE_BYTES else "disk"


def cases_from_cache(
    report: Any,
    names: Sequence[str],
    data_spec: DataSpec,
    stats: Any,
    mode: str,
) -> list[Any]:
    """:class:`CaseData` (``mode="memory"``) or :class:`DiskCase` (``"disk"``) of ``names``."""
    if mode not in ("memory", "disk"):
        raise ValueError(f"mode must be 'memory' or 'disk', got {mode!r}")
    disk = [DiskCase(report.cases[name], data_spec, stats) for name in names]
    return disk if mode == "disk" else [case.materialize() for case in disk]


def resolve_spacing(data_spec: DataSpec, seed: int = 0) -> tuple[float, ...] | None:
    """The target spacing of ``data.spacing`` in mm (array axis order), or None when null.

    ``auto`` is nnU-Net's choice: the median spacing per axis over every labelled case of the
    dataset (``imagesTr``, training and validation cases alike, so all folds agree), read from
    the headers of the ``_0000`` channel files; 1 mm per axis for ``data.synthetic``.

    ``seed`` is unused (the median does not depend on it); it keeps the signature parallel to
    :func:`load_cases`.

    Raises:
        DataError: missing dataset or unreadable headers.
    """
    del seed
    if data_spec.spacing is None:
        return None
    if data_spec.spacing != "auto":
        return tuple(float(s) for s in data_spec.spacing)
    if data_spec.synthetic is not None:
        return (1.0,) * data_spec.synthetic.dims
    from segcli.data.resample import median_spacing
    from segcli.io.dataset import find_cases

    assert data_spec.root is not None
    if not Path(data_spec.root).is_dir():
        raise _missing_root_error(data_spec.root)
    return median_spacing(case.images[0] for case in find_cases(data_spec.root, "Tr"))


def _require_stats(data_spec: DataSpec, stats: Any) -> None:
    if data_spec.normalization == "ct_auto" and stats is None:
        raise SpecError(
            "data.normalization 'ct_auto' needs dataset statistics (low, high, mean, std "
            "per channel); pass stats=... or choose zscore, ct, minmax or none"
        )


def _load_synthetic(
    data_spec: DataSpec,
    names: Sequence[str],
    seed: int,
    stats: Any,
    target: tuple[float, ...] | None = None,
) -> list[CaseData]:
    from segcli.data.cache import CacheSettings, preprocess_arrays
    from segcli.data.preprocessing import normalize_with
    from segcli.data.synth import generate

    syn = data_spec.synthetic
    assert syn is not None
    _check_known(names, set(_synthetic_names(syn.cases)), "synthetic")
    generated = generate(
        syn.cases,
        dims=syn.dims,
        size=syn.size,
        lesion=syn.lesion,
        ring_distance=syn.ring_distance,
        seed=syn.seed if syn.seed is not None else seed,
        noise=syn.noise,
        malign_fraction=syn.malign_fraction,
    )
    by_name = {case.name: case for case in generated}
    settings = CacheSettings.of(data_spec, target)
    spacing = (1.0,) * syn.dims
    _require_stats(data_spec, stats)
    out = []
    for name in names:
        case = by_name[name]
        geometry = make_geometry(case.image.shape, spacing)
        try:
            image, label, geometry, _, own = preprocess_arrays(
                case.image[None].astype(np.float32), case.label, geometry, settings
            )
        except DataError as exc:
            raise DataError(f"case '{name}': {exc}") from None
        image = normalize_with(
            image, data_spec.normalization, own, data_spec.window, stats, out=image
        )
        out.append(CaseData(name, image, label, tuple(geometry.spacing), geometry))
    return out


# --------------------------------------------------------------------------- dataset + loader


class PatchDataset(Dataset):
    """Random training patches from in-memory cases, reproducible per (seed, epoch, index).

    Item ``i`` picks a case uniformly, then a patch position by
    :func:`segcli.data.sampling.patch_region` (the draws of ``sample_patch``; forced onto
    foreground when ``rng.random() < foreground_fraction``, decided per item — not nnU-Net's
    "last third of each batch" rule, so the share holds for any batch size), then the
    augmentation of ``augment``: a rotation/scaling/elastic draw reads the patch's region grown
    by its margin (:func:`segcli.data.sampling.grow_region`, from memory or the cache files
    alike) and resamples it into the patch; the other transforms follow.  All draws come from
    ``np.random.default_rng(SeedSequence([seed, epoch, i]))``.

    Indexing: ``ds[i]`` uses the epoch set by :meth:`set_epoch`; ``ds[(epoch, i)]`` names the
    epoch explicitly (what :func:`build_loader`'s sampler does, so persistent workers see the
    current epoch).

    Args:
        cases: labelled cases (every ``label`` set), all with the same channel count: in
            memory (:class:`CaseData`) or in the preprocessing cache (:class:`DiskCase`, each
            patch read from disk when drawn, in the loader's workers).
        patch_size: spatial patch size, one entry per spatial axis.
        foreground_fraction: share of patches centred on a foreground voxel, in [0, 1].
        augment: ``data.augment``.
        pad_mode, pad_value: padding of cases smaller than the patch (``inference.pad_mode``,
            ``inference.pad_value``: training and inference must pad alike).
        length: items per epoch (``iterations_per_epoch · batch_size``).
        seed: the experiment seed.

    Raises:
        DataError: no cases, a case without label, or dimensions that disagree.
    """

    def __init__(
        self,
        cases: list[CaseData],
        patch_size: Sequence[int],
        foreground_fraction: float,
        augment: AugmentSpec,
        pad_mode: str = "minimum",
        pad_value: float = 0.0,
        length: int = 1,
        seed: int = 0,
    ) -> None:
        if not cases:
            raise DataError("no training cases to sample patches from")
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        self.patch_size = tuple(int(p) for p in patch_size)
        dims = len(self.patch_size)
        channels = {_channels(c) for c in cases}
        if len(channels) > 1:
            raise DataError(f"cases have different numbers of channels: {sorted(channels)}")
        for case in cases:
            if isinstance(case, DiskCase):
                spatial = case.spatial
            else:
                if case.label is None:
                    raise DataError(f"case '{case.name}' has no label; training needs labels")
                spatial = tuple(case.image.shape[1:])
                if tuple(case.label.shape) != spatial:
                    raise DataError(
                        f"case '{case.name}': label shape {case.label.shape} differs from image "
                        f"{spatial}"
                    )
            if len(spatial) != dims:
                raise DataError(
                    f"case '{case.name}' has {len(spatial)} spatial axes "
                    f"(image {spatial}) but data.patch_size {list(self.patch_size)} "
                    f"has {dims}"
                )
        self.cases = cases
        self.foreground_fraction = float(foreground_fraction)
        # rotations stay in planes of similar spacing: the cases' median spacing decides
        spacing = np.median(np.array([c.spacing for c in cases], dtype=np.float64), axis=0)
        self.augment = build_augment(augment, dims, tuple(float(v) for v in spacing))
        self.pad_mode = pad_mode
        self.pad_value = float(pad_value)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        # computed once here (in the parent process, shared with forked workers); a DiskCase
        # brings its own from the cache
        self.foreground = [
            c.foreground if c.foreground is not None else foreground_locations(c.label)
            for c in cases
        ]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose patches ``ds[i]`` and the loader's next pass return."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, tuple):
            epoch, i = (int(v) for v in index)
        else:
            epoch, i = self.epoch, int(index)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, i]))
        k = int(rng.integers(len(self.cases)))
        case = self.cases[k]
        force = bool(rng.random() < self.foreground_fraction)
        spatial = case.spatial if isinstance(case, DiskCase) else tuple(case.image.shape[1:])
        region, pad = patch_region(spatial, self.patch_size, rng, force, self.foreground[k])
        # rotation/scaling/elastic resample a larger crop around the patch: read just that
        draw = self.augment.draw_spatial(rng, self.patch_size)
        if draw is not None:
            region, pad = grow_region(spatial, region, pad, draw.margin)
        image, label = self._read(case, region, pad)
        if draw is not None:
            image, label = self.augment.spatial.apply(image, label, draw)  # type: ignore[union-attr]
        image, label = self.augment(image, label, rng)
        # np.array(copy=True), not ascontiguousarray: a flipped axis of length 1 (a one-slice
        # patch) keeps its negative stride through ascontiguousarray, which torch refuses
        image_t = torch.from_numpy(np.array(image, dtype=np.float32, copy=True))
        label_t = torch.from_numpy(np.array(label, dtype=np.int64, copy=True))
        return image_t, label_t

    def _read(
        self, case: CaseData | DiskCase, region: tuple[slice, ...], pad: list[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The region of ``case`` (from memory or the cache files), padded like inference."""
        if isinstance(case, DiskCase):
            image, label = case.read(region)
            minimum = case.minimum
        else:
            assert case.label is not None
            image = np.array(case.image[(slice(None), *region)], copy=True)
            label = np.array(case.label[region], copy=True)
            minimum = None
            if self.pad_mode == "minimum" and any(b or a for b, a in pad):
                minimum = case.image.reshape(case.image.shape[0], -1).min(axis=1)
        image = pad_region(image, pad, self.pad_mode, self.pad_value, minimum)
        label = pad_region(label[None], pad, "constant", 0)[0]
        return image, label


def _channels(case: Any) -> int:
    return case.channels if isinstance(case, DiskCase) else int(case.image.shape[0])


class EpochSampler(Sampler):
    """Yields ``(epoch, i)`` for ``i`` in ``range(rank, len(dataset), world_size)``.

    The epoch is read when a pass starts.  With ``world_size`` > 1 (one sampler per
    torchrun process) the ranks draw distinct, interleaved items of one dataset of
    ``iterations · batch_size · world_size`` items: at step ``s`` rank ``r`` loads items
    ``(s·B + j)·W + r`` for ``j < B``, so the union of the ranks' step-``s`` batches is exactly
    the step-``s`` batch of one process with batch size ``B·W`` (items ``s·B·W … (s+1)·B·W − 1``).
    """

    def __init__(self, dataset: PatchDataset, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.dataset = dataset
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.dataset.epoch
        indices = range(self.rank, len(self.dataset), self.world_size)
        return iter([(epoch, i) for i in indices])

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.world_size))


def _seed_worker(worker_id: int) -> None:
    # patches do not depend on these, but anything else drawing from global RNGs stays seeded
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(
    dataset: PatchDataset,
    batch_size: int,
    workers: int,
    seed: int,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over ``dataset`` in index order (items are random patches already).

    Call ``dataset.set_epoch(e)`` before each pass; the sampler passes the epoch to the workers
    with each index, so persistent workers (used when ``workers > 0``) stay in step.  Under
    torchrun each rank loads every ``world_size``-th item starting at ``rank``
    (:class:`EpochSampler`): give the dataset ``world_size`` times the items of one rank.

    Args:
        dataset: the patch dataset.
        batch_size: items per batch (the last batch may be smaller).
        workers: worker processes; 0 loads in the main process.
        seed: seeds the loader's generator (and hence each worker's base seed).
        pin_memory: pin batches for fast host→GPU copies (use only with CUDA).
        prefetch_factor: batches loaded in advance per worker (ignored with 0 workers).
        rank, world_size: this process's rank and the number of processes (torchrun).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be ≥ 0, got {workers}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset, rank, world_size),
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        generator=generator,
        drop_last=False,
        **extra,
    )
