"""Region-based labels (nnU-Net's "regions"): output channels that are sets of label values.

A multiclass network has one softmax channel per label value and every voxel is exactly one
class.  Nested structures (a lesion inside an organ; the BraTS tumour sub-regions) are
better described by *regions* that overlap: ``organ = {1, 2}`` (organ tissue and the lesion
in it), ``lesion = {2}``.  A region network has one sigmoid channel per region; its target for
channel ``k`` is ``label ∈ regions[k]`` (:func:`encode_regions`).

Writing a prediction back as one integer label map follows nnU-Net's rule: regions are applied
in their order, each later region overwriting earlier ones where its probability exceeds the
threshold, with the *write value* of region ``k`` = the one label value of ``regions[k]`` that
no later region contains (:func:`write_values`).  So list outer regions before inner ones:
``{organ: [1, 2], lesion: [2]}`` writes 1 where the organ channel fires and 2 where the lesion
channel fires, inside or outside the organ.  For every label map whose values all lie in some
region, ``decode_regions(encode_regions(m)) == m`` (tested).

Plain ``multilabel: true`` without regions is the special case ``regions[k] = {k + 1}``
(:func:`default_regions`).

    >>> import numpy as np
    >>> regions = ((1, 2), (2,))
    >>> m = np.array([0, 1, 2])
    >>> encode_regions(m, regions).astype(int).tolist()
    [[0, 1, 1], [0, 0, 1]]
    >>> decode_regions(encode_regions(m, regions), regions).tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "Regions",
    "as_regions",
    "check_region_labels",
    "decode_regions",
    "default_regions",
    "encode_regions",
    "region_problems",
    "write_values",
]

#: one tuple of label values per output channel, in channel (= overwrite) order
Regions = tuple[tuple[int, ...], ...]


def default_regions(num_labels: int) -> Regions:
    """Plain multilabel: channel ``k`` is label value ``k + 1`` alone."""
    return tuple((k + 1,) for k in range(num_labels))


def as_regions(regions: Mapping[str, Sequence[int]] | Sequence[Sequence[int]]) -> Regions:
    """A spec mapping ``{name: [values]}`` (or a list of value lists) → :data:`Regions`."""
    values = regions.values() if isinstance(regions, Mapping) else regions
    return tuple(tuple(int(v) for v in region) for region in values)


def region_problems(regions: Regions, names: Sequence[str] | None = None) -> list[str]:
    """What makes ``regions`` unusable, one sentence each (empty list: fine).

    Checks: at least one region; each non-empty, values ≥ 1 (0 is background, in no region),
    no value twice in a region, no two identical regions, and each region has exactly one
    value that no later region contains (its write value, see :func:`write_values`).
    """
    names = list(names) if names is not None else [f"#{k}" for k in range(len(regions))]
    if not regions:
        return ["give at least one region, e.g. {organ: [1, 2], lesion: [2]}"]
    out = []
    seen: dict[frozenset[int], str] = {}
    for k, (name, region) in enumerate(zip(names, regions, strict=True)):
        if not region:
            out.append(f"'{name}' is empty; list the label values it contains")
            continue
        bad = [v for v in region if v < 1]
        if bad:
            out.append(f"'{name}' holds {bad[0]}; values are labels >= 1 (0 is background)")
        if len(set(region)) != len(region):
            out.append(f"'{name}' lists a value twice: {list(region)}")
        key = frozenset(region)
        if key in seen:
            out.append(f"'{name}' is the same region as '{seen[key]}'")
        seen.setdefault(key, name)
        later = set().union(*(set(r) for r in regions[k + 1 :]))
        own = sorted(set(region) - later)
        if not own:
            out.append(
                f"'{name}' has no label value of its own (all of {list(region)} are in later "
                "regions), so a decoded label map can never show it; order regions from outer "
                "to inner, each adding one label value, e.g. {organ: [1, 2], lesion: [2]}"
            )
        elif len(own) > 1:
            out.append(
                f"'{name}' would decode to several label values {own} (none of them is in a "
                "later region); order regions from outer to inner, each adding one label "
                "value, e.g. {organ: [1, 2], lesion: [2]}"
            )
    return out


def write_values(regions: Regions) -> tuple[int, ...]:
    """The label value each region writes when decoding: its one value in no later region.

    Raises:
        ValueError: ``regions`` has a problem (see :func:`region_problems`).
    """
    problems = region_problems(regions)
    if problems:
        raise ValueError("; ".join(problems))
    out = []
    for k, region in enumerate(regions):
        later = set().union(*(set(r) for r in regions[k + 1 :]))
        out.append(next(v for v in region if v not in later))
    return tuple(out)


def encode_regions(label_map: npt.ArrayLike, regions: Regions) -> npt.NDArray[np.bool_]:
    """Integer label map ``(*spatial)`` → boolean region masks ``(K, *spatial)``.

    Channel ``k`` is ``label_map ∈ regions[k]``; values in no region (0 included) switch every
    channel off.
    """
    m = np.asarray(label_map)
    return np.stack([np.isin(m, np.asarray(region)) for region in regions])


def decode_regions(
    masks_or_probs: npt.ArrayLike, regions: Regions, threshold: float = 0.5
) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]:
    """Region channels ``(K, *spatial)`` → one integer label map ``(*spatial)``.

    Boolean masks are used as they are; float probabilities are thresholded (``> threshold``).
    Regions are applied in order and later regions overwrite earlier ones, each writing its
    :func:`write_values` value; voxels where no channel fires are 0.  uint8 unless a write
    value exceeds 255.
    """
    arr = np.asarray(masks_or_probs)
    if arr.shape[0] != len(regions):
        raise ValueError(f"{arr.shape[0]} channels but {len(regions)} regions")
    values = write_values(regions)
    dtype = np.uint8 if max(values) <= 255 else np.uint16
    out = np.zeros(arr.shape[1:], dtype=dtype)
    for k, value in enumerate(values):
        fired = arr[k] if arr.dtype == np.bool_ else arr[k] > threshold
        out[fired] = value
    return out


def check_region_labels(cases: Sequence[object], regions: Mapping[str, Sequence[int]]) -> None:
    """Every non-zero value of every case's ``label`` must lie in some region.

    A value in no region would train as background in every channel and never be predicted,
    which is almost always a mistake in the spec.

    Raises:
        DataError: naming the case, the value and the regions.
    """
    from segcli.errors import DataError

    covered = {int(v) for region in regions.values() for v in region}
    for case in cases:
        values = getattr(case, "label_values", None)  # the loaders' cases know their values
        if values is None:
            label = getattr(case, "label", None)
            if label is None or not np.size(label):
                continue
            values = np.unique(label).tolist()
        stray = sorted(set(values) - covered - {0})
        if stray:
            listed = ", ".join(f"{k}: {list(v)}" for k, v in regions.items())
            raise DataError(
                f"case '{getattr(case, 'name', '?')}': its label map has value {stray[0]}, which "
                f"is in no region of regions ({{{listed}}}); add it to a region or fix the label map"
            )
