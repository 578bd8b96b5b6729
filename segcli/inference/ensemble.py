"""Checkpoints → networks, and one case's probabilities averaged over them on the input grid.

    >>> from segcli.inference.ensemble import ensemble_probabilities, load_models
    >>> models = load_models(exp, [Path("runs/x/checkpoint_best.pt")], "cpu")
    >>> probs = ensemble_probabilities(exp, models, image, "cpu", geometry)  # (classes, *spatial)

Each model sees the image normalised as in training (``data.normalization``, with the dataset
statistics stored in its checkpoint for ``ct_auto``) and, when it was trained at a spacing,
resampled to it (``data.resample_order``); its probabilities are resampled linearly back onto
the input grid before the average.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from segcli.data.preprocessing import normalize
from segcli.errors import CheckpointError, DataError, SpecError
from segcli.io.checkpoint import Checkpoint, check_compatible
from segcli.io.images import ImageGeometry, make_geometry

if TYPE_CHECKING:
    from segcli.config import Experiment

__all__ = ["LoadedModel", "ensemble_probabilities", "load_models"]


@dataclass
class LoadedModel:
    """A network with its weights loaded and the preprocessing it was trained with.

    Attributes:
        spacing: the target spacing (mm, array axis order) of its training data, None when it
            was trained on the images' own grids.
    """

    path: Path
    network: nn.Module
    stats: dict[str, list[float]] | None
    spacing: tuple[float, ...] | None = None


def load_models(exp: Experiment, paths: list[Path], device: str) -> list[LoadedModel]:
    """Build ``exp.model`` once per checkpoint, load the weights, move to ``device``, eval mode.

    Raises:
        CheckpointError: unreadable file, a checkpoint trained with another architecture,
            size or output meaning (the message lists the differing spec keys, see
            :func:`segcli.io.checkpoint.check_compatible`), or weights that do not fit.
    """
    from segcli.models import build

    models = []
    for path in paths:
        ckpt = Checkpoint.load(path, map_location="cpu")
        check_compatible(ckpt, exp, path)
        network = build(exp.model)
        try:
            network.load_state_dict(ckpt.model)
        except (RuntimeError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()
            raise CheckpointError(
                f"{path}: the weights do not fit model.arch '{exp.model.arch}': "
                f"{' '.join(first[:3])}"
            ) from None
        stats = ckpt.normalization_stats
        models.append(LoadedModel(path, network.to(device).eval(), stats, ckpt.trained_spacing))
    return models


def ensemble_probabilities(
    exp: Experiment,
    models: list[LoadedModel],
    image: np.ndarray,
    device: str,
    geometry: ImageGeometry | None = None,
) -> np.ndarray:
    """Mean probabilities of every model on the input grid, ``(classes, *spatial)`` float32.

    Args:
        image: the raw ``(C, *spatial)`` image (normalised here, per model's statistics).
        geometry: the image's grid; needed when a model was trained at a spacing.

    Raises:
        SpecError: the network cannot run sliding windows of ``inference.patch_size``.
        DataError: out of GPU memory, or an image whose dimensionality the spacing lacks.
    """
    from segcli.inference.from_spec import window_probabilities

    total: torch.Tensor | None = None
    normalized: dict[str, tuple[torch.Tensor, ImageGeometry | None]] = {}
    for model in models:
        key = json.dumps([model.stats, model.spacing], sort_keys=True)
        if key not in normalized:  # ensemble members usually share the preprocessing
            array = normalize(image, exp.data.normalization, exp.data.window, model.stats)
            grid = None
            if model.spacing is not None:
                array, grid = _resample_input(exp, array, geometry, model.spacing)
            normalized[key] = (torch.from_numpy(array), grid)
        network_input, grid = normalized[key]
        try:
            probs = window_probabilities(
                model.network, network_input, exp.inference, exp.multilabel, device
            ).cpu()
        except ValueError as exc:
            raise SpecError(f"model.arch '{exp.model.arch}': {exc}") from None
        except torch.cuda.OutOfMemoryError:
            raise DataError(
                f"out of GPU memory on an image of size {tuple(image.shape[1:])}; lower "
                "inference.batch_size or inference.patch_size, or use --device cpu"
            ) from None
        if grid is not None and geometry is not None:
            from segcli.data.resample import resample_image

            probs = torch.from_numpy(resample_image(probs.float().numpy(), grid, geometry, order=1))
        total = probs if total is None else total.add_(probs)
    assert total is not None  # models is not empty
    if len(models) > 1:
        total.div_(len(models))
    return total.numpy()


def _resample_input(
    exp: Experiment,
    image: np.ndarray,
    geometry: ImageGeometry | None,
    spacing: tuple[float, ...],
) -> tuple[np.ndarray, ImageGeometry]:
    """The normalised ``(C, *spatial)`` image on its grid resampled to ``spacing``."""
    from segcli.data.resample import resample_image, resampled_geometry

    if geometry is None:
        geometry = make_geometry(image.shape[1:])
    if len(spacing) != geometry.dims:
        raise DataError(
            f"the image has {geometry.dims} axes {geometry.size} but the model was trained at "
            f"spacing {list(spacing)} ({len(spacing)} axes)"
        )
    grid = resampled_geometry(geometry, spacing)
    return resample_image(image, geometry, grid, exp.data.resample_order), grid
