"""The loss registry, build_loss and the module wrappers."""

from __future__ import annotations

import typing

import pytest
import torch
from pydantic import TypeAdapter

from segcli.config import from_dict
from segcli.config.schema import LOSS_NAMES, DiceCESpec, DiceSpec, LossSpec, WeightedCESpec
from segcli.errors import SpecError
from segcli.losses import LOSSES, build_loss, experiment_loss
from segcli.losses import functional as LF


def _spec_literals() -> set[str]:
    union = typing.get_args(LossSpec)[0]
    names: set[str] = set()
    for model in typing.get_args(union):
        names.update(typing.get_args(model.model_fields["name"].annotation))
    return names


def test_registry_matches_schema() -> None:
    assert set(LOSS_NAMES) == set(LOSSES.names())
    assert _spec_literals() == set(LOSSES.names())


def _spec(name: str):
    return TypeAdapter(LossSpec).validate_python({"name": name})


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("dims", [2, 3])
def test_every_loss_forward_backward(name: str, dims: int) -> None:
    spatial = (6, 6) if dims == 2 else (4, 4, 4)
    loss = build_loss(_spec(name), 3, False, class_weights=[0.5, 1.0, 2.0])
    logits = torch.randn(2, 3, *spatial, requires_grad=True)
    target = torch.randint(0, 3, (2, *spatial))
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n not in ("ce", "weighted_ce")])
def test_every_multilabel_loss_accepts_channels_and_index_maps(name: str) -> None:
    loss = build_loss(_spec(name), 2, True)
    logits = torch.randn(2, 2, 3, 4, 4, requires_grad=True)
    index_map = torch.randint(0, 3, (2, 3, 4, 4))
    channels = LF.multilabel_target(index_map, 2)
    a, b = loss(logits, index_map), loss(logits, channels)
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-6)
    a.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bare_name_and_unknown_name() -> None:
    assert isinstance(build_loss("dice", 2, False), torch.nn.Module)
    with pytest.raises(SpecError, match=r"unknown loss 'dcie'.*did you mean 'dice'"):
        build_loss("dcie", 2, False)


def _soft_dice_reference(
    probs: torch.Tensor, onehot: torch.Tensor, smooth: float, batch: bool, channels: range
) -> float:
    """Brute force: 1 − mean over channels (and samples unless ``batch``) of
    (2·Σ p·t + smooth) / (Σ p + Σ t + smooth), with Python sums over voxels."""
    p, t = probs.double().numpy(), onehot.double().numpy()
    groups = [slice(None)] if batch else [slice(b, b + 1) for b in range(p.shape[0])]
    scores = []
    for group in groups:
        for c in channels:
            pc, tc = p[group, c].ravel().tolist(), t[group, c].ravel().tolist()
            inter = sum(a * b for a, b in zip(pc, tc, strict=True))
            scores.append((2 * inter + smooth) / (sum(pc) + sum(tc) + smooth))
    return 1 - sum(scores) / len(scores)


def test_dice_ce_is_weighted_sum_of_independent_references() -> None:
    """dice_ce against torch's own cross-entropy / BCE and a brute-force soft Dice."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    spec = DiceCESpec(name="dice_ce", dice_weight=0.3, ce_weight=2.0, batch=True)
    value = build_loss(spec, 3, False)(logits, target)
    onehot = torch.nn.functional.one_hot(target, 3).movedim(-1, 1)
    dice = _soft_dice_reference(logits.softmax(1), onehot, 1.0, True, range(1, 3))
    ce = float(torch.nn.functional.cross_entropy(logits, target))
    assert float(value) == pytest.approx(0.3 * dice + 2.0 * ce, rel=1e-5)
    # multilabel: sigmoid Dice over every channel, and bce in place of ce
    ml_target = (torch.rand(2, 3, 5, 5) > 0.5).float()
    value = build_loss(spec, 3, True)(logits, ml_target)
    dice = _soft_dice_reference(logits.sigmoid(), ml_target, 1.0, True, range(3))
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, ml_target))
    assert float(value) == pytest.approx(0.3 * dice + 2.0 * bce, rel=1e-5)


def test_dice_spec_options_reach_the_module() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    spec = DiceSpec(name="dice", smooth=0.5, batch=True, include_background=True)
    expected = LF.dice_loss(logits, target, smooth=0.5, batch=True, include_background=True)
    assert float(build_loss(spec, 3, False)(logits, target)) == pytest.approx(float(expected))


def test_weighted_ce_from_spec_list_and_auto() -> None:
    torch.manual_seed(2)
    logits = torch.randn(1, 2, 4, 4)
    target = torch.randint(0, 2, (1, 4, 4))
    exp = from_dict(
        {
            "data": {"synthetic": {"cases": 4}},
            "model": {"arch": "cnn"},
            "loss": {"name": "weighted_ce", "weights": [1.0, 4.0]},
        }
    )
    listed = build_loss(exp.loss, exp.model.num_classes, exp.multilabel)
    expected = LF.cross_entropy(logits, target, weight=[1.0, 4.0])
    assert float(listed(logits, target)) == pytest.approx(float(expected))
    # auto: the weights passed by the trainer are used
    auto = build_loss(WeightedCESpec(name="weighted_ce"), 2, False, class_weights=[0.2, 1.8])
    expected = LF.cross_entropy(logits, target, weight=[0.2, 1.8])
    assert float(auto(logits, target)) == pytest.approx(float(expected))


def test_experiment_loss_weights_from_the_spec_or_the_training_labels() -> None:
    """weighted_ce: the spec's list as given; ``auto``: inverse class frequency of the labels
    passed in (what training passes: its training cases' label maps)."""
    import numpy as np

    labels = [np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)]
    labels[0][0, :2] = 1  # 2 of 32 voxels foreground: frequencies 30/32 and 2/32
    base = {"data": {"synthetic": {"cases": 4}}, "model": {"arch": "cnn"}}
    listed = experiment_loss(
        from_dict({**base, "loss": {"name": "weighted_ce", "weights": [1.0, 4.0]}}), labels
    )
    assert listed.weight.tolist() == [1.0, 4.0]
    auto = experiment_loss(from_dict({**base, "loss": {"name": "weighted_ce"}}), labels)
    # w_c ∝ 1/f_c = (32/30, 32/2), normalised to sum to 2 classes → (2/16, 30/16)
    assert auto.weight.tolist() == pytest.approx([2 / 16, 30 / 16])
    # other losses ignore the labels
    assert type(experiment_loss(from_dict({**base, "loss": {"name": "ce"}}), [])).__name__ == (
        "CELoss"
    )


def test_build_loss_errors() -> None:
    auto = WeightedCESpec(name="weighted_ce")
    with pytest.raises(SpecError, match="'auto' but no class weights"):
        build_loss(auto, 2, False)
    with pytest.raises(SpecError, match="class_weights has 3 entries but the model has 2"):
        build_loss(auto, 2, False, class_weights=[1, 1, 1])
    with pytest.raises(SpecError, match="loss.weights has 1 entries"):
        build_loss(WeightedCESpec(name="weighted_ce", weights=[1.0]), 2, False)
    with pytest.raises(SpecError, match="all zero"):
        build_loss(auto, 2, False, class_weights=[0.0, 0.0])
    with pytest.raises(SpecError, match="softmax loss; with multilabel"):
        build_loss("ce", 2, True)
    with pytest.raises(SpecError, match="at least 2 classes"):
        build_loss("dice", 1, False)
    # a single sigmoid channel is fine: per-sample soft Dice of the sigmoid (defaults)
    logits = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    target = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    value = float(build_loss("dice", 1, True)(logits, target))
    assert value == pytest.approx(
        _soft_dice_reference(logits.sigmoid(), target, 1.0, False, range(1)), rel=1e-5
    )


def test_weighted_ce_weights_move_with_the_module() -> None:
    loss = build_loss(WeightedCESpec(name="weighted_ce", weights=[1.0, 2.0]), 2, False)
    assert "weight" in dict(loss.named_buffers())
    assert loss.to(torch.float64).weight.dtype == torch.float64
