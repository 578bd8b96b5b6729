"""Validation during ``segcli train``: sliding-window inference on whole validation cases.

    >>> from segcli.engine.validation import validate
    >>> val_loss, val_dice = validate(model, val_cases, exp, loss_fn, "cpu")

The loss is the training loss evaluated on the stitched probabilities (log-probabilities passed
as logits); Dice is ``segcli.metrics`` Dice averaged over foreground labels and cases (a label
absent from both prediction and reference scores 1, as in ``segcli evaluate``).  Labels are
decoded from the probabilities exactly as ``segcli predict`` does
(:func:`segcli.inference.decode.decode_labels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from segcli.config import Experiment
from segcli.engine import distributed
from segcli.errors import SpecError
from segcli.inference.decode import decode_labels
from segcli.losses.deep_supervision import loss_target

__all__ = ["check_validation_size", "validate"]


def validate(
    model: nn.Module,
    cases: list[Any],
    exp: Experiment,
    loss_fn: nn.Module,
    device: str,
    precision: str | None = None,
) -> tuple[float, float]:
    """Sliding-window inference on the validation cases → (mean loss, mean foreground Dice).

    Under torchrun this is a collective: every rank passes all ``cases``, scores its share
    (:func:`segcli.engine.distributed.shard`), and the sums and counts are all-reduced, so every
    rank returns the same means over all cases.  ``model`` is the plain network, not the
    DistributedDataParallel wrapper.

    ``precision`` is the network's precision in the windows (None: ``inference.precision``;
    training passes its resolved ``train.precision``); probabilities, loss and Dice are
    float32 whatever it is.
    """
    sums = _validation_sums(model, distributed.shard(cases), exp, loss_fn, device, precision)
    loss_sum, dice_sum, count = distributed.all_reduce_sum(sums)
    return loss_sum / count, dice_sum / count


def _validation_sums(
    model: nn.Module,
    cases: list[Any],
    exp: Experiment,
    loss_fn: nn.Module,
    device: str,
    precision: str | None = None,
) -> tuple[float, float, int]:
    """(Σ loss, Σ mean foreground Dice, number of cases) over ``cases`` (see :func:`validate`)."""
    from segcli.inference.from_spec import window_probabilities
    from segcli.metrics.regions import mean_foreground_dice

    num_out = exp.model.num_classes
    regions = exp.region_values  # None for softmax models
    losses, dices = [], []
    model.eval()
    for item in cases:
        case = item.materialize()  # a case read from the cache: in memory for its turn only
        image = torch.from_numpy(case.image)
        probs = window_probabilities(
            model, image, exp.inference, exp.multilabel, device, tta=False, precision=precision
        ).float()
        label = torch.from_numpy(case.label.astype(np.int64))
        with torch.no_grad():
            eps = 1e-6
            if exp.multilabel:
                p = probs.clamp(eps, 1 - eps)
                logits = torch.log(p) - torch.log1p(-p)
            else:
                logits = torch.log(probs.clamp_min(eps))
            target = loss_target(label.unsqueeze(0), num_out, exp.multilabel, regions)
            losses.append(float(loss_fn(logits.unsqueeze(0), target)))
        pred = decode_labels(probs.numpy(), exp.multilabel, regions)
        dices.append(mean_foreground_dice(pred, case.label, case.spacing, num_out, regions))
    model.train()
    return float(sum(losses)), float(sum(dices)), len(cases)


def check_validation_size(exp: Experiment) -> None:
    """Validation runs ``inference.patch_size`` windows (or overlap tiles): check them first.

    Raises:
        SpecError: the network cannot process the patch size, or maps it to a smaller output
            that overlap-tile cannot tile (a strided window classifier, a tile smaller than
            one stride).
    """
    import torch

    from segcli.inference.overlap_tile import tile_geometry
    from segcli.models import build, check_input_size

    patch = tuple(exp.inference.patch_size)
    out = tuple(check_input_size(exp.model, patch, key="inference.patch_size"))
    if out == patch:
        return
    with torch.device("meta"):  # the geometry needs the network's description only
        network = build(exp.model)
    try:
        tile_geometry(network, patch)
    except ValueError as exc:
        window = getattr(exp.model, "mode", None) == "window"
        fix = "model.mode: dense" if window else "a larger inference.patch_size"
        raise SpecError(
            f"model.arch '{exp.model.arch}' maps inference.patch_size {list(patch)} to "
            f"{list(out)}, which validation and predict cannot tile ({exc}); use {fix} or "
            "train without validation (data.val_fraction: 0)"
        ) from None
