"""Loss registry: ``loss.name`` in the spec → a builder of an ``nn.Module``.

Every built loss is called as ``loss(logits, target)`` with ``logits`` ``(B, K, *spatial)`` and
``target`` int64 class indices ``(B, *spatial)`` (multilabel: binary ``(B, K, *spatial)`` or
an index map whose value ``k + 1`` marks channel ``k``); see :mod:`segcli.losses.functional`.

    >>> from segcli.config.schema import DiceCESpec
    >>> loss = build_loss(DiceCESpec(name="dice_ce"), num_classes=2, multilabel=False)
    >>> value = loss(torch.randn(4, 2, 32, 32), torch.randint(0, 2, (4, 32, 32)))
    >>> value.backward()
    >>> LOSSES.names()
    ['bce', 'ce', 'dice', 'dice_ce', 'focal', 'weighted_ce']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError
from torch import nn

from segcli.config.schema import (
    DiceCESpec,
    DiceSpec,
    Experiment,
    FocalSpec,
    LossSpec,
    PlainLossSpec,
    WeightedCESpec,
)
from segcli.errors import SpecError
from segcli.losses.functional import class_frequency_weights
from segcli.losses.modules import (
    BCELoss,
    CELoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    WeightedCELoss,
)
from segcli.registry import Registry

__all__ = [
    "LOSSES",
    "BCELoss",
    "CELoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "WeightedCELoss",
    "build_loss",
    "experiment_loss",
    "class_frequency_weights",
]

#: builder signature: ``(spec, num_classes, multilabel, class_weights) -> nn.Module``
LossBuilder = Callable[..., nn.Module]

LOSSES: Registry[LossBuilder] = Registry("loss")


def _softmax_only(name: str, multilabel: bool) -> None:
    if multilabel:
        raise SpecError(
            f"loss.name '{name}' is a softmax loss; with multilabel: true use bce, dice, "
            "dice_ce or focal"
        )


@LOSSES.register("bce")
def _bce(
    spec: PlainLossSpec, num_classes: int, multilabel: bool, class_weights: Sequence[float] | None
) -> nn.Module:
    return BCELoss(multilabel=multilabel)


@LOSSES.register("ce")
def _ce(
    spec: PlainLossSpec, num_classes: int, multilabel: bool, class_weights: Sequence[float] | None
) -> nn.Module:
    _softmax_only("ce", multilabel)
    return CELoss()


@LOSSES.register("weighted_ce")
def _weighted_ce(
    spec: WeightedCESpec, num_classes: int, multilabel: bool, class_weights: Sequence[float] | None
) -> nn.Module:
    _softmax_only("weighted_ce", multilabel)
    if spec.weights == "auto":
        if class_weights is None:
            raise SpecError(
                "loss.weights is 'auto' but no class weights were given; compute them with "
                "segcli.losses.class_frequency_weights(training labels, num_classes)"
            )
        weights = [float(w) for w in class_weights]
        source = "class_weights"
    else:
        weights = [float(w) for w in spec.weights]
        source = "loss.weights"
    if len(weights) != num_classes:
        raise SpecError(
            f"{source} has {len(weights)} entries but the model has {num_classes} classes"
        )
    if not any(w > 0 for w in weights):
        raise SpecError(f"{source} are all zero; at least one class needs a positive weight")
    return WeightedCELoss(weights)


@LOSSES.register("dice")
def _dice(
    spec: DiceSpec, num_classes: int, multilabel: bool, class_weights: Sequence[float] | None
) -> nn.Module:
    return DiceLoss(spec.smooth, spec.batch, spec.include_background, multilabel)


@LOSSES.register("dice_ce")
def _dice_ce(
    spec: DiceCESpec, num_classes: int, multilabel: bool, class_weights: Sequence[float] | None
) -> nn.Module:
    return DiceCELoss(
        spec.smooth,
        spec.batch,
        spec.include_background,
        spec.dice_weight,
        spec.ce_weight,
        multilabel,
    )


@LOSSES.register("focal")
def _focal(
    spec: FocalSpec, num_classes: int, multilabel: bool, class_weights: Sequence[float] | None
) -> nn.Module:
    return FocalLoss(spec.gamma, spec.alpha, multilabel)


def build_loss(
    spec: LossSpec | str,
    num_classes: int,
    multilabel: bool,
    class_weights: Sequence[float] | None = None,
) -> nn.Module:
    """Build the loss module named by ``spec``.

    Args:
        spec: a loss spec from :mod:`segcli.config.schema` (``exp.loss``), or a bare name
            (``"dice"``) for the spec's defaults.
        num_classes: channels of the network output — classes including background, or the
            number of labels when ``multilabel``.
        multilabel: sigmoid per channel instead of softmax over classes.
        class_weights: per-class weights for ``weighted_ce`` with ``weights: auto`` (from
            :func:`class_frequency_weights` on the training labels); ignored otherwise.

    Returns:
        An ``nn.Module`` called as ``loss(logits, target)``.

    Raises:
        SpecError: unknown loss name, a softmax loss with ``multilabel``, fewer than 2 classes
            with softmax, or weights that do not match ``num_classes``.
    """
    if isinstance(spec, str):
        LOSSES.get(spec)  # unknown name → SpecError with the choices
        try:
            spec = TypeAdapter(LossSpec).validate_python({"name": spec})
        except ValidationError as exc:  # pragma: no cover - every name has defaults
            raise SpecError(f"loss '{spec}': {exc}") from None
    if num_classes < 1:
        raise SpecError(f"num_classes must be at least 1, got {num_classes}")
    if not multilabel and num_classes < 2:
        raise SpecError(
            f"loss '{spec.name}' with softmax needs at least 2 classes (background and "
            "foreground), got 1; use multilabel: true for a single sigmoid channel"
        )
    return LOSSES.get(spec.name)(spec, num_classes, multilabel, class_weights)


def experiment_loss(
    exp: Experiment, train_labels: Sequence[npt.NDArray[np.integer] | Mapping[int, int]]
) -> nn.Module:
    """``exp.loss`` built for ``exp.model``, with its class weights.

    ``weighted_ce`` takes the spec's ``loss.weights``, or with ``weights: auto`` the
    :func:`class_frequency_weights` of ``train_labels`` (the training cases' label maps, any
    shape, or their ``{value: voxels}`` counts); every other loss ignores ``train_labels``.
    """
    class_weights = None
    if exp.loss.name == "weighted_ce":
        if exp.loss.weights == "auto":
            class_weights = class_frequency_weights(train_labels, exp.model.num_classes)
        else:
            class_weights = list(exp.loss.weights)
    return build_loss(exp.loss, exp.model.num_classes, exp.multilabel, class_weights)
