"""What augmentation costs per patch, and the cheapest set that fits a time allowance.

The loader keeps up when its workers produce a batch in no more than a training step:
``workers · step_seconds / batch_size`` per patch (:func:`per_patch_allowance`).  The planner
measures the transforms here (:func:`transform_costs`, in-process, one thread like a loader
worker), and when the expected cost of a spec exceeds the allowance keeps the cheapest
transforms first (:func:`fit_to_allowance`)::

    >>> costs = transform_costs(spec, patch_size, spacing)          # {name: s per firing}
    >>> allowance = per_patch_allowance(step_s, batch_size, workers, base_s)
    >>> reduced, dropped = fit_to_allowance(spec, costs, allowance)

Names are ``data.augment`` keys: the blocks (``rotation`` ... ``gamma``) and the simple set
(``flip``, ``rotate90``, ``intensity``).  "Cheap first" orders them by expected seconds per
patch, probability × cost per firing (:func:`cheap_first`); for nnU-Net's preset on one core of
the bench machine it was :data:`CHEAP_FIRST` at all three patch sizes measured but for
neighbours swapping places (``make bench-augment``, docs/benchmarks.md): the intensity
transforms cost well under a millisecond at Hippocampus patch sizes, the spatial resampling
several milliseconds (100 to 200 at 64×160×160).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from segcli.config.schema import AUGMENT_PRESETS, AugmentSpec

__all__ = [
    "CHEAP_FIRST",
    "SIMPLE",
    "TRANSFORMS",
    "cheap_first",
    "expected_cost",
    "fit_to_allowance",
    "per_patch_allowance",
    "transform_costs",
]

#: the blocks of ``data.augment`` (each a mapping with a probability, or null)
TRANSFORMS: tuple[str, ...] = AUGMENT_PRESETS["nnunet"]
#: the simple set: booleans sharing ``data.augment.probability``
SIMPLE: tuple[str, ...] = ("flip", "rotate90", "intensity")
#: nnU-Net's preset cheapest first by expected cost per patch at 40×56×40 (bench/augment_cost.py);
#: elastic, off in the preset, last: per firing it is the dearest
CHEAP_FIRST: tuple[str, ...] = (
    "brightness",
    "contrast",
    "flip",
    "inverted_gamma",
    "low_resolution",
    "noise",
    "blur",
    "gamma",
    "scaling",
    "rotation",
    "elastic",
)


def enabled(spec: AugmentSpec) -> list[str]:
    """The transforms ``spec`` switches on, in ``data.augment``'s order."""
    on = [name for name in TRANSFORMS if getattr(spec, name) is not None]
    return on + [name for name in SIMPLE if getattr(spec, name)]


def probability(spec: AugmentSpec, name: str) -> float:
    """How often transform ``name`` fires on a patch (flips: per axis)."""
    block = getattr(spec, name)
    return float(spec.probability if name in SIMPLE else block.probability)


def only(spec: AugmentSpec, name: str) -> AugmentSpec:
    """``spec`` with transform ``name`` alone, firing on every patch."""
    off: dict[str, object] = {key: None for key in TRANSFORMS}
    off.update({key: False for key in SIMPLE})
    if name in SIMPLE:
        return spec.model_copy(update={**off, name: True, "probability": 1.0})
    block = getattr(spec, name).model_copy(update={"probability": 1.0})
    return spec.model_copy(update={**off, name: block})


@contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _synthetic_case(
    shape: Sequence[int], channels: int, classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random image and a label of ``classes`` nested blobs (realistic costs for the
    one-hot label path, which resamples each class present)."""
    image = rng.standard_normal((channels, *shape), dtype=np.float32)
    axes = np.ogrid[tuple(slice(0, s) for s in shape)]
    squared = sum(
        ((a - (s - 1) / 2) / (s / 2)).astype(np.float32) ** 2
        for a, s in zip(axes, shape, strict=True)
    )
    label = np.zeros(shape, np.uint8)
    for k in range(1, classes):
        label[squared < (1.0 - k / classes) ** 2] = k
    return image, label


def transform_costs(
    spec: AugmentSpec,
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    channels: int = 1,
    classes: int = 3,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Seconds per patch that each transform ``spec`` enables costs when it fires.

    Measured here, with torch on one thread (a loader worker's setting), on a synthetic patch of
    ``channels`` channels and ``classes`` label classes: the mean over ``repeats`` patches,
    each with fresh random parameters (and channel choices: the mean is what a firing costs on
    average).  A spatial transform's time includes copying its larger
    crop out of the volume (what the loader reads more).

    Args:
        spec: ``data.augment`` (e.g. ``AugmentSpec(preset="nnunet")``).
        patch_size: the training patch.
        spacing: the data's spacing (the anisotropy rule changes what the transforms do).
        channels, classes: of the data.
        repeats: patches timed per transform (after one untimed warm-up).
        seed: of the synthetic data and the draws.

    Returns:
        ``{name: seconds}`` for every enabled transform, in ``data.augment``'s order.
    """
    from segcli.data.augment import build_augment
    from segcli.data.sampling import grow_region, pad_region

    patch = tuple(int(p) for p in patch_size)
    rng = np.random.default_rng(seed)
    # the patch in the middle of a volume twice its size; a larger crop is padded beyond it,
    # as the loader pads near a case's border
    volume_shape = tuple(2 * p for p in patch)
    image, label = _synthetic_case(volume_shape, channels, classes, rng)
    start = [p // 2 for p in patch]
    costs: dict[str, float] = {}
    with _one_thread():
        for name in enabled(spec):
            augment = build_augment(only(spec, name), len(patch), spacing)
            times = []
            for i in range(repeats + 1):
                region = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
                pad = [(0, 0)] * len(patch)
                began = time.perf_counter()
                draw = augment.draw_spatial(rng, patch)
                if draw is not None:
                    region, pad = grow_region(volume_shape, region, pad, draw.margin)
                img = pad_region(image[(slice(None), *region)].copy(), pad, "edge")
                lab = pad_region(label[region][None].copy(), pad, "constant")[0]
                if draw is not None:
                    assert augment.spatial is not None
                    img, lab = augment.spatial.apply(img, lab, draw)
                augment(img, lab, rng)
                if i:
                    times.append(time.perf_counter() - began)
            costs[name] = float(np.mean(times))
    return costs


def expected_cost(spec: AugmentSpec, costs: Mapping[str, float]) -> float:
    """Expected seconds per patch: Σ probability × cost per firing over the enabled transforms
    (rotation and scaling share one resampling, so their sum is an upper bound)."""
    return sum(probability(spec, name) * costs[name] for name in enabled(spec))


def cheap_first(spec: AugmentSpec, costs: Mapping[str, float]) -> list[str]:
    """The enabled transforms, cheapest expected cost per patch first (ties: spec order)."""
    names = enabled(spec)
    return sorted(names, key=lambda n: (probability(spec, n) * costs[n], names.index(n)))


def per_patch_allowance(
    step_seconds: float, batch_size: int, workers: int, base_seconds: float = 0.0
) -> float:
    """Augmentation time per patch that ``workers`` loader processes can afford while the
    training step takes ``step_seconds`` per batch, after ``base_seconds`` per patch of reading
    and cropping (0 workers: the main process loads between steps, so nothing is free)."""
    if workers <= 0:
        return 0.0
    return max(0.0, workers * step_seconds / batch_size - base_seconds)


def fit_to_allowance(
    spec: AugmentSpec, costs: Mapping[str, float], seconds_per_patch: float
) -> tuple[AugmentSpec, list[str]]:
    """``spec`` reduced to the cheapest transforms whose expected cost fits the allowance.

    Transforms are kept in :func:`cheap_first` order while the running expected cost stays
    within ``seconds_per_patch``; the rest are switched off (a block set to null, a simple
    flag to false).  The preset name stays, its dropped blocks null (so the reduced spec loads
    back to itself).

    Returns:
        ``(reduced spec, names dropped, dearest last)``.
    """
    kept, total, dropped = [], 0.0, []
    for name in cheap_first(spec, costs):
        cost = probability(spec, name) * costs[name]
        if not dropped and total + cost <= seconds_per_patch:
            kept.append(name)
            total += cost
        else:
            dropped.append(name)
    update = {name: (False if name in SIMPLE else None) for name in dropped}
    return spec.model_copy(update=update), dropped
