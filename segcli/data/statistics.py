"""Dataset-level intensity statistics for ``normalization: ct_auto`` (nnU-Net's CT scheme).

Foreground voxels (label > 0) of every training case are sampled; the 0.5 and 99.5 percentiles
become the clipping window and the mean and standard deviation of the clipped foreground the
z-score parameters.  ``segcli train`` stores the result in the run folder (normalization.json and
the checkpoint) so ``segcli predict`` normalises exactly as training did.

    >>> stats = foreground_intensity_stats(exp.data, train_names)
    >>> stats["low"], stats["high"], stats["mean"], stats["std"]   # one value per channel
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from segcli.config.schema import DataSpec
from segcli.errors import DataError

__all__ = ["foreground_intensity_stats", "stats_from_samples"]

#: foreground voxels sampled per case (nnU-Net uses 10,000)
SAMPLES_PER_CASE = 10_000


def stats_from_samples(samples: list[np.ndarray]) -> dict[str, list[float]]:
    """Percentile window and clipped mean/std from per-channel foreground samples."""
    out: dict[str, list[float]] = {"low": [], "high": [], "mean": [], "std": []}
    for values in samples:
        if values.size == 0:
            raise DataError(
                "ct_auto normalisation: the training labels contain no foreground voxel"
            )
        low, high = np.percentile(values, [0.5, 99.5])
        clipped = np.clip(values, low, high)
        out["low"].append(float(low))
        out["high"].append(float(high))
        out["mean"].append(float(clipped.mean()))
        out["std"].append(float(max(clipped.std(), 1e-8)))
    return out


def foreground_intensity_stats(
    data: DataSpec,
    names: list[str],
    seed: int = 0,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> dict[str, list[float]]:
    """Foreground intensity statistics over the training cases ``names`` of ``data.root``."""
    from segcli.io.dataset import find_cases
    from segcli.io.images import read_image, read_label

    if data.root is None:
        raise DataError("ct_auto normalisation needs data.root (a dataset with labels)")
    wanted = set(names)
    cases = [c for c in find_cases(data.root, "Tr") if c.name in wanted]
    rng = np.random.default_rng(seed)
    per_channel: list[list[np.ndarray]] = []
    iterable: Iterable[Any] = progress(cases) if progress is not None else cases
    for case in iterable:
        label, _ = read_label(case.label)  # type: ignore[arg-type]
        mask = label > 0
        for c, path in enumerate(case.images):
            image, _ = read_image(path)
            values = image[mask]
            if values.size > SAMPLES_PER_CASE:
                values = rng.choice(values, SAMPLES_PER_CASE, replace=False)
            if len(per_channel) <= c:
                per_channel.append([])
            per_channel[c].append(values.astype(np.float64))
    return stats_from_samples([np.concatenate(v) if v else np.array([]) for v in per_channel])
