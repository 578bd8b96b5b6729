"""Checkpoints → networks, and one case's probabilities averaged over them on the input grid.

    >>> from segcli.inference.ensemble import ensemble_probabilities, load_models
    >>> models = load_models(exp, [Path("runs/x/checkpoint_best.pt")], "cpu")
    >>> probs = ensemble_probabilities(exp, models, image, "cpu", geometry)  # (classes, *spatial)

Each model sees the image preprocessed as in training: cropped to its non-zero region, resampled
to the model's training spacing (``data.resample_order``) and normalised (``data.normalization``,
with the dataset statistics stored in its checkpoint for ``ct_auto``); its probabilities are
resampled linearly back onto the input grid before the average.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from segcli.errors import CheckpointError
from segcli.io.checkpoint import Checkpoint, check_compatible
from segcli.io.images import ImageGeometry

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
    #: trained on cases cropped to their non-zero region (False for checkpoints older than
    #: ``data.crop_nonzero``: they saw whole images, so predict must not crop for them)
    crop: bool = True
    #: the spec it was trained with when that is not the predicting spec (a member of
    #: ``ensemble:``): its preprocessing and window settings are used for it; None: the same
    exp: Experiment | None = None

    def spec(self, default: Experiment) -> Experiment:
        """The spec this model predicts with: its own, else ``default``."""
        return self.exp if self.exp is not None else default


def load_models(
    exp: Experiment, paths: list[Path], device: str, member: bool = False
) -> list[LoadedModel]:
    """Build ``exp.model`` once per checkpoint, load the weights, move to ``device``, eval mode.

    ``member``: the models belong to another spec than the predicting one (an ensemble member),
    so each keeps ``exp`` for its preprocessing and windows.

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
        models.append(
            LoadedModel(
                path,
                network.to(device).eval(),
                stats,
                ckpt.trained_spacing,
                ckpt.trained_with_crop,
                exp if member else None,
            )
        )
    return models


def ensemble_probabilities(
    exp: Experiment,
    models: list[LoadedModel],
    image: np.ndarray,
    device: str,
    geometry: ImageGeometry | None = None,
) -> np.ndarray:
    """Mean probabilities of every model on the input grid, ``(classes, *spatial)`` float32.

    The preprocessing of :func:`segcli.inference.volume.predict_volume` (crop to the non-zero
    region, resample to the training spacing, normalise), with float32 probabilities of the
    whole image kept — for scripts and small images; ``segcli predict`` uses
    :func:`~segcli.inference.volume.predict_volume`, which never holds them.

    Args:
        image: the raw ``(C, *spatial)`` image (normalised here, per model's statistics).
        geometry: the image's grid (default: unit spacing); the result is on this grid.

    Raises:
        SpecError: the network cannot run sliding windows of ``inference.patch_size``.
        DataError: out of GPU memory, or an image whose dimensionality the spacing lacks.
    """
    from segcli.data.resample import resample_image, same_grid
    from segcli.inference.volume import (
        _network_input,
        crop_input,
        model_groups,
        paste_probabilities,
        summed_probabilities,
    )

    region, cropped, grid = crop_input(exp, models, image, geometry)
    total: np.ndarray | None = None
    for members in model_groups(models):
        own = members[0].spec(exp)
        network_input, net_grid = _network_input(own, members[0], cropped, grid)
        probs = summed_probabilities(members, network_input, own, device, np.float32)
        if members[0].spacing is not None and not same_grid(net_grid, grid):
            probs = resample_image(probs, net_grid, grid, order=1)
        total = probs if total is None else np.add(total, probs, out=total)
    assert total is not None  # models is not empty
    if len(models) > 1:
        total /= len(models)
    return paste_probabilities(total, tuple(image.shape[1:]), region, exp.multilabel)
