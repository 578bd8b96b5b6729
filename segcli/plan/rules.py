"""The planner's rules as pure functions (nnU-Net v2's published rules, re-derived).

    >>> from segcli.plan.rules import target_spacing, topology
    >>> target_spacing([(1, 1, 1)] * 3, [(36, 50, 35)] * 3).spacing
    (1.0, 1.0, 1.0)
    >>> topology((1.0, 1.0, 1.0), (36, 50, 35)).patch
    (40, 56, 40)

Sources (read, not copied): ``nnunetv2/experiment_planning/experiment_planners/
default_experiment_planner.py`` (target spacing, patch size and batch size from a memory
budget), ``network_topology.py`` (``get_pool_and_conv_props``: pooling per axis and kernel
sizes) and dynamic_network_architectures' ``compute_conv_feature_map_size`` (the memory
estimate).  Everything is in array axis order (z, y, x); spacings in mm; sizes in voxels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "MIN_FEATURE_MAP_EDGE",
    "SpacingChoice",
    "Topology",
    "batch_size_for_memory",
    "ct_like",
    "feature_map_size",
    "fit_patch_to_memory",
    "initial_patch",
    "memory_reference",
    "mirroring",
    "nearest_patch",
    "normalization_for",
    "resampled_shape",
    "shrink_patch",
    "stage_widths",
    "target_spacing",
    "topology",
    "topology_feature_maps",
]

#: an axis is "low resolution" when its spacing exceeds 3× the others' (nnU-Net ANISO_THRESHOLD)
ANISOTROPY_THRESHOLD = 3.0
#: the bottleneck's feature maps keep at least 4 voxels per pooled axis (nnU-Net)
MIN_FEATURE_MAP_EDGE = 4
#: nnU-Net's calibration: this many feature-map voxels of its U-Net fit 8 GB at the reference batch
REFERENCE_3D = 560_000_000
REFERENCE_2D = 85_000_000
REFERENCE_GB = 8.0
REFERENCE_BATCH_3D = 2
REFERENCE_BATCH_2D = 12
MIN_BATCH = 2
#: a batch never covers more than 5 % of the dataset's voxels (nnU-Net's max_dataset_covered)
MAX_DATASET_COVERED = 0.05


# --------------------------------------------------------------------------- spacing


@dataclass(frozen=True)
class SpacingChoice:
    """Target spacing and why.

    Attributes:
        spacing: mm per axis.
        median: the per-axis median spacing.
        anisotropic_axis: the axis the anisotropy rule changed, or None.
        percentile10: that axis's 10th-percentile spacing (when the rule applied).
    """

    spacing: tuple[float, ...]
    median: tuple[float, ...]
    anisotropic_axis: int | None = None
    percentile10: float | None = None


def target_spacing(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    threshold: float = ANISOTROPY_THRESHOLD,
) -> SpacingChoice:
    """nnU-Net's fullres target spacing: the median, with the anisotropy exception.

    When the coarsest axis of the median spacing is more than ``threshold`` times coarser than
    the others *and* has fewer than 1/``threshold`` of their median voxels, its target is the
    10th percentile of that axis's spacings (the finer scans keep their resolution instead of
    being blurred to the median), but never finer than the other axes.

    Args:
        spacings: per case, mm per axis.
        shapes: per case, voxels per axis (nnU-Net uses the shape after cropping).
    """
    spacing_arr = np.asarray(spacings, dtype=np.float64)
    median = np.percentile(spacing_arr, 50, axis=0)
    target = median.copy()
    sizes = np.percentile(np.asarray(shapes, dtype=np.float64), 50, axis=0)
    if len(target) < 2:
        return SpacingChoice(tuple(map(float, target)), tuple(map(float, median)))
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > threshold * max(target[i] for i in others)
    aniso_voxels = sizes[worst] * threshold < min(sizes[i] for i in others)
    if not (aniso_spacing and aniso_voxels):
        return SpacingChoice(tuple(map(float, target)), tuple(map(float, median)))
    p10 = float(np.percentile(spacing_arr[:, worst], 10))
    finest_other = max(target[i] for i in others)
    value = p10 if p10 >= finest_other else max(finest_other, p10) + 1e-5
    target[worst] = value
    return SpacingChoice(tuple(map(float, target)), tuple(map(float, median)), worst, p10)


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """Voxels per axis after resampling ``shape`` from ``spacing`` to ``target`` (rounded)."""
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True)
    )


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Topology:
    """Pooling and kernels of a U-Net for one patch size.

    Attributes:
        strides: one per downsampling (``depth`` entries), per axis 2 (pool) or 1 (not).
        kernel_sizes: one per resolution stage (``depth + 1``), per axis 3 or 1.
        pools_per_axis: how often each axis is pooled.
        patch: the patch padded up to a multiple of ``divisor`` per axis.
        divisor: ``2**pools_per_axis``.
    """

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    pools_per_axis: tuple[int, ...]
    patch: tuple[int, ...]
    divisor: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.strides)

    @property
    def uniform(self) -> bool:
        """Every stage pools every axis and every kernel is 3 (the plain ``depth`` U-Net)."""
        return all(s == 2 for st in self.strides for s in st) and all(
            k == 3 for ks in self.kernel_sizes for k in ks
        )


def topology(
    spacing: Sequence[float],
    patch: Sequence[int],
    min_edge: int = MIN_FEATURE_MAP_EDGE,
) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props``: pool while every pooled axis keeps ``min_edge``.

    Each stage pools (stride 2) the axes that are at least ``2·min_edge`` long and whose current
    spacing is less than twice the finest current spacing among them; an axis pooled alone must
    be at least ``3·min_edge`` long.  An axis's kernel is 1 until its spacing comes within a
    factor 2 of the finest (then 3 for good); the bottleneck always has kernel 3.  The patch is
    padded to a multiple of ``2**pools`` per axis.

    Args:
        spacing: mm per axis at the target spacing.
        patch: the wanted patch size (voxels per axis).
        min_edge: smallest feature-map edge in the bottleneck along a pooled axis.
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(p) for p in patch]
    kernel = [1] * dims
    pools = [0] * dims
    strides: list[tuple[int, ...]] = []
    kernels: list[tuple[int, ...]] = []
    while True:
        valid = [i for i in range(dims) if current_size[i] >= 2 * min_edge]
        if not valid:
            break
        finest = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest < 2]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_edge:
            break
        if not valid:
            break
        overall_finest = min(current_spacing)
        for d in range(dims):
            if kernel[d] != 3 and current_spacing[d] / overall_finest < 2:
                kernel[d] = 3
        stride = [1] * dims
        for v in valid:
            stride[v] = 2
            pools[v] += 1
            current_spacing[v] *= 2
            current_size[v] = math.ceil(current_size[v] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)
    divisor = tuple(2**p for p in pools)
    padded = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch, divisor, strict=True))
    return Topology(tuple(strides), tuple(kernels), tuple(pools), padded, divisor)


# --------------------------------------------------------------------------- memory


def stage_widths(base: int, stages: int, cap: int) -> tuple[int, ...]:
    """Filters per resolution stage: ``base`` doubling per stage, capped (nnU-Net: 32 → 320/512)."""
    return tuple(min(base * 2**i, cap) for i in range(stages))


def feature_map_size(
    patch: Sequence[int],
    strides: Sequence[Sequence[int]],
    widths: Sequence[int],
    num_classes: int,
    convs_per_block: int = 2,
    deep_supervision: bool = True,
) -> int:
    """Feature-map voxels of the U-Net for one sample (dynamic_network_architectures' estimate).

    Encoder: every convolution's output (``widths[s]`` maps at stage ``s``'s size); decoder per
    stage: its convolutions, the transposed convolution's output and the segmentation head
    (every stage with deep supervision, else only the last).  Sizes use floor division, as
    ``compute_conv_feature_map_size`` does.
    """
    sizes = [tuple(int(p) for p in patch)]
    for stride in strides:
        sizes.append(tuple(s // t for s, t in zip(sizes[-1], stride, strict=True)))
    total = 0
    for stage, size in enumerate(sizes):
        total += convs_per_block * widths[stage] * int(np.prod(size, dtype=np.int64))
    depth = len(strides)
    for i in range(depth):
        level = depth - 1 - i  # decoder stage at the resolution of encoder stage ``level``
        voxels = int(np.prod(sizes[level], dtype=np.int64))
        total += convs_per_block * widths[level] * voxels  # convolutions
        total += widths[level] * voxels  # transposed convolution output
        if deep_supervision or level == 0:
            total += num_classes * voxels
    return total


def memory_reference(dims: int, gpu_memory_gb: float) -> float:
    """Feature-map voxels that fit ``gpu_memory_gb`` at nnU-Net's reference batch size."""
    reference = REFERENCE_3D if dims == 3 else REFERENCE_2D
    return reference * gpu_memory_gb / REFERENCE_GB


def reference_batch(dims: int) -> int:
    return REFERENCE_BATCH_3D if dims == 3 else REFERENCE_BATCH_2D


def initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's starting patch: a 256³ (2D: 2048²) voxel box shaped like the spacing's inverse,
    clipped to the median shape."""
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    dims = len(spacing)
    volume = 256.0**3 if dims == 3 else 2048.0**2
    box = inverse * (volume / float(np.prod(inverse))) ** (1.0 / dims)
    return tuple(
        int(min(round(b), m)) for b, m in zip(box, np.round(median_shape).astype(int), strict=True)
    )


def nearest_patch(spacing: Sequence[float], wanted: Sequence[int], up: Topology) -> Topology:
    """The CPU rounding: each axis of ``wanted`` to the nearest multiple of its divisor.

    nnU-Net rounds the wanted patch (the median shape) up, so on small images every sample
    carries padding: Task04's 36×50×35 becomes 40×56×40, 42 % more voxels than the case.  On a
    GPU that padding is nearly free; on a CPU the step time grows with the voxels.  Here an axis
    goes to the nearer multiple (down on a tie, never below one divisor); the result is kept
    only when it is smaller than ``up`` (nnU-Net's topology for ``wanted``) and pools every
    axis as often, so the receptive field and the network stay the same.
    """
    rounded = []
    for w, d in zip(wanted, up.divisor, strict=True):
        low = max(d, (int(w) // d) * d)
        high = low if low >= w else low + d
        rounded.append(low if w - low <= high - w else high)
    down = topology(spacing, rounded)
    smaller = math.prod(down.patch) < math.prod(up.patch)
    return down if smaller and down.pools_per_axis == up.pools_per_axis else up


def shrink_patch(
    patch: Sequence[int], median_shape: Sequence[float], spacing: Sequence[float]
) -> tuple[int, ...] | None:
    """One step of nnU-Net's patch reduction: shrink the axis largest relative to the median
    shape by its current divisor (recomputed for the smaller size).  None when no axis can
    shrink any more (every axis at its divisor)."""
    current = topology(spacing, patch)
    order = np.argsort([p / max(m, 1.0) for p, m in zip(patch, median_shape, strict=True)])[::-1]
    for axis in order:
        axis = int(axis)
        tmp = list(patch)
        tmp[axis] -= current.divisor[axis]
        if tmp[axis] < 1:
            continue
        divisor = topology(spacing, tmp).divisor
        new = list(patch)
        new[axis] -= divisor[axis]
        if new[axis] < 1:
            continue
        return topology(spacing, new).patch
    return None


def topology_feature_maps(topo: Topology, base_filters: int, cap: int, num_classes: int) -> int:
    """:func:`feature_map_size` of ``topo``'s patch and strides, filters doubling from
    ``base_filters`` per stage up to ``cap``."""
    widths = stage_widths(base_filters, topo.depth + 1, cap)
    return feature_map_size(topo.patch, topo.strides, widths, num_classes)


def fit_patch_to_memory(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    base_filters: int,
    cap: int,
    num_classes: int,
    reference: float,
    ref_batch: int,
) -> tuple[Topology, int, int]:
    """Largest patch (from :func:`initial_patch`, shrinking) whose estimate fits ``reference``.

    nnU-Net's loop: while ``estimate / ref_batch · 2 > reference`` shrink the patch.

    Returns:
        ``(topology, estimate, shrink steps)``.
    """
    patch = topology(spacing, initial_patch(spacing, median_shape)).patch
    steps = 0
    while True:
        topo = topology(spacing, patch)
        estimate = topology_feature_maps(topo, base_filters, cap, num_classes)
        if estimate / ref_batch * MIN_BATCH <= reference:
            return topo, estimate, steps
        smaller = shrink_patch(topo.patch, median_shape, spacing)
        if smaller is None:
            return topo, estimate, steps
        patch, steps = smaller, steps + 1


def batch_size_for_memory(
    estimate: int, reference: float, ref_batch: int, patch: Sequence[int], dataset_voxels: float
) -> tuple[int, int, int]:
    """nnU-Net's batch size: the memory headroom times the reference batch, capped so that a
    batch covers at most 5 % of the dataset's voxels, at least 2.

    Returns:
        ``(batch, from memory, 5 % cap)``.
    """
    from_memory = int(round(reference / max(estimate, 1) * ref_batch))
    covered = int(round(dataset_voxels * MAX_DATASET_COVERED / float(np.prod(patch))))
    return max(min(from_memory, covered), MIN_BATCH), from_memory, covered


# --------------------------------------------------------------------------- normalisation


def ct_like(name: str, integer_valued: bool, minimum_image: float) -> tuple[bool, str]:
    """Whether a channel holds CT (Hounsfield units) and why.

    A channel named CT (case-insensitive, as nnU-Net's ``channel_names``) is CT.  Without a
    name (no dataset.json), integer intensities whose minimum is at or below −900 (air is
    −1000 HU; MRI and microscopy intensities are not negative) are taken as HU.
    """
    if name.strip().lower() == "ct":
        return True, "channel named CT in dataset.json"
    unnamed = name.startswith("channel")
    if unnamed and integer_valued and minimum_image <= -900:
        return True, f"unnamed channel with integer intensities down to {minimum_image:g} (HU)"
    return False, ""


def normalization_for(ct_flags: Sequence[bool]) -> str:
    """``ct_auto`` when every channel is CT; ``zscore`` (per volume) otherwise.

    segcli applies one scheme to all channels, so a mixed CT + MRI dataset falls back to the
    per-volume z-score (nnU-Net would normalise each channel by its own scheme).
    """
    return "ct_auto" if ct_flags and all(ct_flags) else "zscore"


# --------------------------------------------------------------------------- augmentation

#: words that give a label a side or an end of the body: mirroring moves such a structure to the
#: other side while its label stays (nnU-Net has a trainer without mirroring for these data sets)
SIDED_WORDS = frozenset({"left", "right", "anterior", "posterior", "superior", "inferior"})
#: the words of a name: snake_case, kebab-case, spaces, CamelCase and digits all separate them
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


def mirroring(label_names: Iterable[str]) -> tuple[bool, str]:
    """Whether to train with random flips (``data.augment.flip``) and why.

    nnU-Net mirrors every axis.  A label named by a side or an end (``left kidney``,
    ``Anterior``) keeps its name when the patch is mirrored, so the flipped patch shows the
    structure where the data never has it; segcli's flips act on every axis at once, so any
    such label turns them off.  Words count whole: ``Right_lung``, ``kidneyLeft`` and
    ``left2`` are sided, ``bright`` and ``leftover`` are not.
    """
    sided = [name for name in label_names if SIDED_WORDS.intersection(_words(name))]
    if sided:
        return False, (
            f"no flips: label(s) {', '.join(repr(n) for n in sided)} name a side or an end, "
            "and a mirrored patch would show them where the data never has them"
        )
    return True, "mirroring on every axis (nnU-Net)"
