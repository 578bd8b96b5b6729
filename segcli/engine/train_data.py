"""The data of one ``segcli train`` run: split, statistics, loaded cases and the patch loader.

    >>> from segcli.engine.train_data import load_train_data, patch_loader
    >>> data = load_train_data(exp)              # checks labels and channels against the model
    >>> dataset, loader = patch_loader(exp, data.train_cases, "cpu", world=1)

Every patch is drawn from a generator seeded by (seed, epoch, index), so the same spec and seed
give the same batches whatever the number of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segcli.config import Experiment
from segcli.engine import distributed
from segcli.engine.runtime import info, track
from segcli.errors import DataError, SegcliError

__all__ = ["TrainData", "check_label_range", "load_train_data", "patch_loader"]


@dataclass
class TrainData:
    """The split and the loaded cases of a run.

    Attributes:
        stats: ``ct_auto``'s foreground intensity statistics of the training cases, else None.
        spacing: the resolved ``data.spacing`` (mm, array axis order), None without resampling.
        mode: where the cases are: ``memory`` (:class:`segcli.data.loaders.CaseData`) or
            ``disk`` (:class:`segcli.data.loaders.DiskCase`, patches read from the cache).
        cache: the preprocessing cache's :class:`segcli.data.cache.CacheReport` (None for
            synthetic data).
        seconds: wall time from the start of loading to cases ready.
    """

    train_names: list[str]
    val_names: list[str]
    train_cases: list[Any]
    val_cases: list[Any]
    stats: dict[str, Any] | None
    spacing: tuple[float, ...] | None
    mode: str = "memory"
    cache: Any = None
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the console: where the cases come from and how long that took."""
        where = "generated in memory"
        if self.cache is not None:
            where = f"{self.mode} mode, cache {self.cache.folder}"
            if self.cache.built:
                where += f", {len(self.cache.built)} case(s) preprocessed now"
        return f"data ready in {self.seconds:.1f} s ({where})"


def load_train_data(exp: Experiment, workers: int | None = None) -> TrainData:
    """Split the cases, preprocess them (the cache), compute ``ct_auto`` statistics, load them.

    ``data.root`` cases go through the preprocessing cache (built where missing or stale, in
    ``workers`` processes with a progress bar) and are then held in memory or read from disk
    by ``data.cache`` (:func:`segcli.data.loaders.cache_mode`).

    Raises:
        SegcliError: no training cases, labels outside the model's classes, or a channel count
            other than ``model.in_channels``.
    """
    import time

    from segcli.data.loaders import (
        cache_mode,
        cases_from_cache,
        list_case_names,
        load_cases,
        preprocess,
        resolve_spacing,
        split_cases,
    )

    started = time.perf_counter()
    names = list_case_names(exp.data, exp.seed)
    train_names, val_names = split_cases(names, exp.data, exp.seed)
    if not train_names:
        raise SegcliError(f"{exp.data.root or 'synthetic data'}: no training cases after the split")
    val_load = val_names  # validation scores at most train.val_max_cases of them
    if exp.train.val_max_cases is not None:
        val_load = val_names[: exp.train.val_max_cases]
    # data.spacing (auto: the dataset's median) resolved once; stored for predict
    spacing = resolve_spacing(exp.data, exp.seed)
    stats, report, mode = None, None, "memory"
    if exp.data.synthetic is not None:
        if exp.data.normalization == "ct_auto":
            from segcli.data.statistics import foreground_intensity_stats

            stats = foreground_intensity_stats(exp.data, train_names, exp.seed)
        train_cases = load_cases(exp.data, train_names, exp.seed, stats=stats, spacing=spacing)
        val_cases = load_cases(exp.data, val_load, exp.seed, stats=stats, spacing=spacing)
    else:
        report = preprocess(
            exp.data,
            [*train_names, *val_load],
            spacing,
            workers=workers,
            progress=lambda items: track(items, "preprocessing"),
            on_wait=lambda: info("another segcli process is building this cache; waiting"),
        )
        if exp.data.normalization == "ct_auto":
            from segcli.data.cache import stats_from_cache

            stats = stats_from_cache(report.cases[n] for n in train_names)
        mode = cache_mode(exp.data, report.nbytes)
        train_cases = cases_from_cache(report, train_names, exp.data, stats, mode)
        val_cases = cases_from_cache(report, val_load, exp.data, stats, mode)
    check_label_range(train_cases + val_cases, exp)
    in_channels = _channels(train_cases[0])
    if in_channels != exp.model.in_channels:
        raise SegcliError(
            f"model.in_channels is {exp.model.in_channels} but the data has {in_channels} "
            f"channel(s) (case '{train_cases[0].name}')"
        )
    seconds = time.perf_counter() - started
    return TrainData(
        train_names, val_names, train_cases, val_cases, stats, spacing, mode, report, seconds
    )


def _channels(case: Any) -> int:
    from segcli.data.loaders import DiskCase

    return case.channels if isinstance(case, DiskCase) else int(case.image.shape[0])


def check_label_range(cases: list[Any], exp: Experiment) -> None:
    """Every label value must be a class of the model (else the loss fails mid-training).

    Raises:
        DataError: naming the case, the value found and the ``model.classes`` needed.
    """
    num_out = exp.model.num_classes
    if exp.regions is not None:
        from segcli.labels import check_region_labels

        check_region_labels(cases, exp.regions)
        return
    top = num_out if exp.multilabel else num_out - 1
    for case in cases:
        values = getattr(case, "label_values", None)  # loaders' cases; else read the map
        if values is None:
            label = getattr(case, "label", None)
            values = () if label is None or not label.size else (int(label.max()),)
        if not values:
            continue
        found = int(max(values))
        if found > top:
            need = found if exp.multilabel else found + 1
            meaning = (
                f"{num_out} label channel(s), values 1..{num_out}"
                if exp.multilabel
                else f"{num_out} classes, values 0..{top}"
            )
            raise DataError(
                f"case '{case.name}': its label map has value {found} but the model has "
                f"{meaning}; set model.classes to {need} or more (or fix the label map)"
            )


def patch_loader(exp: Experiment, cases: list[Any], device: str, world: int) -> tuple[Any, Any]:
    """(PatchDataset, DataLoader) of one epoch: ``iterations_per_epoch`` batches per rank.

    ``train.batch_size`` is per rank: under torchrun the ranks split one epoch of
    ``batch_size · world`` patches per iteration.
    """
    from segcli.data.loaders import PatchDataset, build_loader

    spec = exp.train
    dataset = PatchDataset(
        cases,
        patch_size=exp.data.patch_size,
        foreground_fraction=exp.data.foreground_fraction,
        augment=exp.data.augment,
        pad_mode=exp.inference.pad_mode,
        pad_value=exp.inference.pad_value,
        length=spec.iterations_per_epoch * spec.batch_size * world,
        seed=exp.seed,
    )
    loader = build_loader(
        dataset,
        spec.batch_size,
        spec.workers,
        exp.seed,
        pin_memory=device.startswith("cuda"),
        rank=distributed.rank(),
        world_size=world,
    )
    return dataset, loader
