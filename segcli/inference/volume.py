"""One whole case through the networks, in bounded memory: what ``segcli predict`` runs.

    >>> from segcli.inference.volume import predict_volume
    >>> labels, probs = predict_volume(exp, models, image, "cpu", geometry)
    >>> labels.shape == image.shape[1:]          # the input's grid, background outside the crop

The steps (the same preprocessing as training, :mod:`segcli.data.cache`):

1. crop the raw image to its non-zero bounding box (``data.crop_nonzero``);
2. per distinct preprocessing among the models (their ``ct_auto`` statistics and training
   spacing): resample the crop to the training spacing and normalise it with the crop's own
   statistics (or the dataset's, ``ct_auto``);
3. run the sliding windows slab by slab (:func:`segcli.inference.sliding_window_slabs`): the
   float32 probabilities exist only for one band of windows at a time;
4. one model on the image's own grid with no probabilities asked for: each slab is decoded to
   labels at once, so no whole-image probability volume exists at all.  Otherwise the slabs
   are stored as float16, averaged over the models, and resampled back onto the crop's grid one
   class at a time (linear, as nnU-Net does), freeing each class on the training grid as it
   goes, then decoded slab by slab;
5. the labels are pasted into a zero (background) volume on the input's exact grid.

Memory (``docs/benchmarks.md``, "predict memory"): one float32 image and its normalised copy,
the float32 band, and — only in the second case of step 4 — 2 bytes per voxel and class on
the training grid and on the crop's grid, never 4 bytes per voxel and class of the whole image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from segcli.data.preprocessing import crop_geometry, nonzero_bbox, normalize_with
from segcli.errors import DataError, SpecError
from segcli.inference.decode import decode_labels
from segcli.io.images import ImageGeometry, make_geometry

if TYPE_CHECKING:
    from segcli.config import Experiment
    from segcli.inference.ensemble import LoadedModel

__all__ = [
    "crop_box",
    "crop_input",
    "model_groups",
    "paste_probabilities",
    "predict_volume",
    "probability_slabs",
    "summed_probabilities",
]

#: rows of the first axis decoded (or resampled) at a time when decoding stored probabilities
_DECODE_ROWS = 16


def probability_slabs(
    network: torch.nn.Module, image: torch.Tensor, exp: Experiment, device: str
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, stop, probabilities)`` slabs of ``image`` with the spec's ``inference`` settings.

    Sliding windows yield slabs as they finish; a network whose output is smaller than its
    input (valid padding) runs by overlap-tile, yielded as one slab.
    """
    from segcli.inference.overlap_tile import shrinks
    from segcli.inference.sliding_window import sliding_window_slabs

    spec = exp.inference
    try:
        if shrinks(network, spec.patch_size):
            from segcli.inference.from_spec import window_probabilities

            probs = window_probabilities(network, image, spec, exp.multilabel, device)
            yield 0, int(image.shape[1]), probs
            return
        yield from sliding_window_slabs(
            network,
            image,
            spec.patch_size,
            overlap=spec.overlap,
            blend=spec.blend,
            batch_size=spec.batch_size,
            tta=spec.tta,
            multilabel=exp.multilabel,
            device=device,
            pad_mode=spec.pad_mode,
            pad_value=spec.pad_value,
            precision=spec.precision,
        )
    except ValueError as exc:
        raise SpecError(f"model.arch '{exp.model.arch}': {exc}") from None
    except torch.cuda.OutOfMemoryError:
        raise DataError(
            f"out of GPU memory on an image of size {tuple(image.shape[1:])}; lower "
            "inference.batch_size or inference.patch_size, or use --device cpu"
        ) from None


def _network_input(
    exp: Experiment, model: LoadedModel, image: np.ndarray, geometry: ImageGeometry
) -> tuple[torch.Tensor, ImageGeometry]:
    """The normalised (and resampled) float32 input of ``model`` and its grid."""
    from segcli.data.cache import CacheSettings, preprocess_arrays

    if model.spacing is not None and len(model.spacing) != geometry.dims:
        raise DataError(
            f"the image has {geometry.dims} axes {geometry.size} but the model was trained at "
            f"spacing {list(model.spacing)} ({len(model.spacing)} axes)"
        )
    settings = CacheSettings(False, model.spacing, exp.data.resample_order, "nearest")
    raw, _, grid, _, own = preprocess_arrays(image, None, geometry, settings)
    if raw is image:
        raw = raw.copy()
    array = normalize_with(raw, exp.data.normalization, own, exp.data.window, model.stats, out=raw)
    return torch.from_numpy(array), grid


def crop_box(
    exp: Experiment, models: list[LoadedModel], image: np.ndarray
) -> tuple[tuple[int, int], ...]:
    """The region predict runs on: the non-zero box when the spec crops and every model was
    trained on cropped cases (older checkpoints saw whole images), else the whole image."""
    if all(model.crop and model.spec(exp).data.crop_nonzero for model in models):
        return nonzero_bbox(image)
    return tuple((0, int(s)) for s in image.shape[1:])


def _same_grid(a: ImageGeometry, b: ImageGeometry) -> bool:
    from segcli.data.resample import same_grid

    return same_grid(a, b)


def predict_volume(
    exp: Experiment,
    models: list[LoadedModel],
    image: np.ndarray,
    device: str,
    geometry: ImageGeometry | None = None,
    probabilities: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Label map (and optionally probabilities) of one raw image on its own grid.

    Args:
        image: the raw ``(C, *spatial)`` image (not normalised).
        geometry: its grid (default: unit spacing, zero origin).
        probabilities: also return float16 ``(classes, *spatial)`` probabilities, averaged over
            the models, on the input grid (outside the crop: background, i.e. class 0 = 1 for
            softmax, all 0 for sigmoid).

    Returns:
        ``(labels, probabilities or None)``; labels as :func:`decode_labels` makes them.

    Raises:
        SpecError: the network cannot run windows of ``inference.patch_size``.
        DataError: out of GPU memory, or an image whose dimensionality the spacing lacks.
    """
    spatial = tuple(image.shape[1:])
    region, cropped, grid = crop_input(exp, models, image, geometry)
    regions = exp.region_values

    labels_crop: np.ndarray | None = None
    total: np.ndarray | None = None  # float16 (classes, *crop) sum over models
    for members in model_groups(models):
        own = members[0].spec(exp)  # an ensemble member predicts with its own spec
        net_input, net_grid = _network_input(own, members[0], cropped, grid)
        on_grid = _same_grid(net_grid, grid) or members[0].spacing is None
        if len(models) == 1 and on_grid and not probabilities:
            labels_crop = _decode_streaming(members[0], net_input, own, device, regions)
            break
        summed = summed_probabilities(members, net_input, own, device)
        del net_input
        if not on_grid:
            summed = _resample_classes(summed, net_grid, grid)
        total = summed if total is None else np.add(total, summed, out=total)
    if labels_crop is None:
        assert total is not None
        if len(models) > 1:
            total /= np.float16(len(models))
        labels_crop = _decode_stored(total, exp.multilabel, regions)
    labels = np.zeros(spatial, dtype=labels_crop.dtype)
    labels[region] = labels_crop
    if not probabilities:
        return labels, None
    assert total is not None
    return labels, paste_probabilities(total, spatial, region, exp.multilabel)


def crop_input(
    exp: Experiment, models: list[LoadedModel], image: np.ndarray, geometry: ImageGeometry | None
) -> tuple[tuple[slice, ...], np.ndarray, ImageGeometry]:
    """``(region, cropped image, its grid)``: the part of ``image`` the models run on
    (:func:`crop_box`) and where it lies; ``geometry`` None is the unit grid."""
    full = geometry if geometry is not None else make_geometry(image.shape[1:])
    box = crop_box(exp, models, image)
    region = tuple(slice(a, b) for a, b in box)
    cropped = image[(slice(None), *region)]
    grid = crop_geometry(full, box) if cropped.shape[1:] != image.shape[1:] else full
    return region, cropped, grid


def model_groups(models: list[LoadedModel]) -> list[list[LoadedModel]]:
    """The models grouped by their preprocessing (``ct_auto`` statistics, training spacing,
    the spec of an ensemble member): fold models share it, and each group's input is made once."""
    groups: dict[str, list[LoadedModel]] = {}
    for model in models:
        own = None if model.exp is None else model.exp.model_dump(mode="json")
        key = json.dumps([model.stats, model.spacing, own], sort_keys=True)
        groups.setdefault(key, []).append(model)
    return list(groups.values())


def paste_probabilities(
    total: np.ndarray, spatial: tuple[int, ...], region: tuple[slice, ...], multilabel: bool
) -> np.ndarray:
    """Probabilities of the crop on the full grid (outside it: background, i.e. class 0 = 1
    for softmax, all 0 for sigmoid), in ``total``'s dtype; ``total`` itself when uncropped."""
    if tuple(total.shape[1:]) == spatial:
        return total
    out = np.zeros((total.shape[0], *spatial), dtype=total.dtype)
    if not multilabel:
        out[0] = 1.0
    out[(slice(None), *region)] = total
    return out


def _decode_streaming(
    model: LoadedModel,
    net_input: torch.Tensor,
    exp: Experiment,
    device: str,
    regions: tuple[tuple[int, ...], ...] | None,
) -> np.ndarray:
    """Labels of one model on its input's grid, decoded slab by slab as the windows finish."""
    out: np.ndarray | None = None
    for start, stop, slab in probability_slabs(model.network, net_input, exp, device):
        decoded = decode_labels(slab.float().cpu().numpy(), exp.multilabel, regions)
        if out is None:
            out = np.zeros(tuple(net_input.shape[1:]), dtype=decoded.dtype)
        out[start:stop] = decoded
    assert out is not None
    return out


def summed_probabilities(
    members: list[LoadedModel],
    net_input: torch.Tensor,
    exp: Experiment,
    device: str,
    dtype: type = np.float16,
) -> np.ndarray:
    """``(classes, *spatial)`` sum of the members' probabilities on their grid, stored in
    ``dtype`` (float16 for predict; float32 for :func:`~segcli.inference.ensemble.ensemble_probabilities`)."""
    total: np.ndarray | None = None
    for model in members:
        for start, stop, slab in probability_slabs(model.network, net_input, exp, device):
            part = slab.float().cpu().numpy()
            if total is None:
                total = np.zeros((part.shape[0], *net_input.shape[1:]), dtype=dtype)
            if model is members[0]:
                total[:, start:stop] = part
            else:
                total[:, start:stop] += part.astype(dtype)
    assert total is not None
    return total


def _resample_classes(
    probs: np.ndarray, source: ImageGeometry, target: ImageGeometry
) -> np.ndarray:
    """float16 probabilities resampled (linear) onto ``target``, one class at a time."""
    from segcli.data.resample import resample_image

    out = np.empty((probs.shape[0], *target.size), dtype=np.float16)
    for c in range(probs.shape[0]):
        channel = probs[c : c + 1].astype(np.float32)
        out[c] = resample_image(channel, source, target, order=1)[0]
    return out


def _decode_stored(
    probs: np.ndarray, multilabel: bool, regions: tuple[tuple[int, ...], ...] | None
) -> np.ndarray:
    """Decode float16 probabilities ``_DECODE_ROWS`` rows at a time (float32 per chunk)."""
    out: np.ndarray | None = None
    rows = probs.shape[1]
    for start in range(0, rows, _DECODE_ROWS):
        chunk = probs[:, start : start + _DECODE_ROWS].astype(np.float32)
        decoded = decode_labels(chunk, multilabel, regions)
        if out is None:
            out = np.zeros(probs.shape[1:], dtype=decoded.dtype)
        out[start : start + _DECODE_ROWS] = decoded
    assert out is not None
    return out
