"""Loss functions against hand-computed values, slow references and gradient direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segcli.losses import functional as LF

LN3 = math.log(3.0)
# With logits (0, ±ln 3) the softmax gives p1 = 3/4 (logit difference +ln 3) or 1/4 (−ln 3).
A = -math.log(0.75)  # 0.287682...  (−ln p of the true class when p = 3/4)
B = -math.log(0.25)  # 1.386294...  (−ln p of the true class when p = 1/4)


def _toy(dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B=1, K=2, four voxels; p(fg) = [3/4, 1/4, 3/4, 1/4], target = [1, 0, 0, 0].

    2D: spatial (1, 4); 3D: spatial (1, 1, 4) — the same numbers, so the same loss values.
    """
    fg = torch.tensor([LN3, -LN3, LN3, -LN3])
    logits = torch.stack([torch.zeros(4), fg])  # (K=2, 4)
    target = torch.tensor([1, 0, 0, 0])
    spatial = (1, 4) if dims == 2 else (1, 1, 4)
    return logits.reshape(1, 2, *spatial), target.reshape(1, *spatial)


# --------------------------------------------------------------------------- hand values


@pytest.mark.parametrize("dims", [2, 3])
def test_cross_entropy_hand_value(dims: int) -> None:
    logits, target = _toy(dims)
    # voxel 0: target 1, p1 = 3/4 → A;  voxel 1: target 0, p0 = 3/4 → A
    # voxel 2: target 0, p0 = 1/4 → B;  voxel 3: target 0, p0 = 3/4 → A
    expected = (3 * A + B) / 4  # = 0.562335
    assert float(LF.cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_weighted_cross_entropy_hand_value(dims: int) -> None:
    logits, target = _toy(dims)
    # weights (bg 1, fg 3): voxel 0 (fg) weighs 3, the others 1
    # (3·A + 1·A + 1·B + 1·A) / (3 + 1 + 1 + 1) = (5A + B) / 6 = 0.470780
    expected = (5 * A + B) / 6
    value = LF.cross_entropy(logits, target, weight=[1.0, 3.0])
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # equal weights are plain cross-entropy
    assert float(LF.cross_entropy(logits, target, weight=[2.0, 2.0])) == pytest.approx(
        float(LF.cross_entropy(logits, target)), rel=1e-6
    )


def test_weighted_cross_entropy_all_zero_weight_voxels_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 2, 3, 3)
    target = torch.zeros(1, 3, 3, dtype=torch.long)  # only background, weight 0
    value = LF.cross_entropy(logits, target, weight=[0.0, 1.0])
    assert float(value) == 0.0


@pytest.mark.parametrize("dims", [2, 3])
def test_bce_two_class_hand_value(dims: int) -> None:
    logits, target = _toy(dims)
    # BCE of p1 against y = [1, 0, 0, 0]:
    #   voxel 0: −ln(3/4) = A; voxel 1: −ln(1 − 1/4) = A; voxel 2: −ln(1 − 3/4) = B; voxel 3: A
    expected = (3 * A + B) / 4
    assert float(LF.binary_cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_bce_equals_ce_for_two_classes_but_not_three(rng: np.random.Generator) -> None:
    logits = torch.from_numpy(rng.normal(size=(2, 2, 5, 6))).float()
    target = torch.from_numpy(rng.integers(0, 2, size=(2, 5, 6)))
    assert float(LF.binary_cross_entropy(logits, target)) == pytest.approx(
        float(LF.cross_entropy(logits, target)), rel=1e-5
    )
    logits3 = torch.from_numpy(rng.normal(size=(2, 3, 5, 6))).float()
    target3 = torch.from_numpy(rng.integers(0, 3, size=(2, 5, 6)))
    assert float(LF.binary_cross_entropy(logits3, target3)) != pytest.approx(
        float(LF.cross_entropy(logits3, target3)), rel=1e-3
    )


def test_bce_multiclass_matches_one_vs_rest_reference(rng: np.random.Generator) -> None:
    logits = torch.from_numpy(rng.normal(size=(2, 4, 3, 3, 3)) * 3).float()
    target = torch.from_numpy(rng.integers(0, 4, size=(2, 3, 3, 3)))
    p = logits.softmax(1).double()
    ref = []
    for k in range(1, 4):  # foreground channels only
        y = (target == k).double()
        ref.append(-(y * p[:, k].log() + (1 - y) * (1 - p[:, k]).log()))
    expected = float(torch.stack(ref).mean())
    assert float(LF.binary_cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_bce_stable_for_huge_logits() -> None:
    logits = torch.tensor([0.0, 200.0]).reshape(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    value = float(LF.binary_cross_entropy(logits, target))
    assert value == pytest.approx(200.0, rel=1e-5)  # −log(1 − p1) = −log σ(−200) ≈ 200


@pytest.mark.parametrize("dims", [2, 3])
def test_dice_hand_value(dims: int) -> None:
    logits, target = _toy(dims)
    # foreground: Σp·y = 3/4, Σp = 2, Σy = 1 → dice = (1.5 + 1) / (2 + 1 + 1) = 0.625
    fg_loss = 1 - 2.5 / 4  # 0.375
    assert float(LF.dice_loss(logits, target)) == pytest.approx(fg_loss, rel=1e-6)
    # background: p0 = [1/4, 3/4, 1/4, 3/4], y0 = [0, 1, 1, 1]
    #   Σp·y = 3/4 + 1/4 + 3/4 = 7/4, Σp = 2, Σy = 3 → dice = (3.5 + 1) / (2 + 3 + 1) = 0.75
    bg_loss = 1 - 4.5 / 6  # 0.25
    value = LF.dice_loss(logits, target, include_background=True)
    assert float(value) == pytest.approx((fg_loss + bg_loss) / 2, rel=1e-6)  # 0.3125
    # smooth 0: dice = 1.5 / 3 → loss 0.5
    assert float(LF.dice_loss(logits, target, smooth=0.0)) == pytest.approx(0.5, rel=1e-6)


def test_dice_batch_pools_sums_instead_of_averaging_samples() -> None:
    # two samples of two voxels; fg logit − bg logit = ±50 → p(fg) = [1, 0] in both samples
    logits = torch.zeros(2, 2, 1, 2)
    logits[:, 1] = torch.tensor([50.0, -50.0])
    target = torch.tensor([[1, 0], [0, 0]]).reshape(2, 1, 2)
    # per sample, smooth 1: s0: Σp·y=1, Σp=1, Σy=1 → (2 + 1)/(1 + 1 + 1) = 1   → loss 0
    #                       s1: Σp·y=0, Σp=1, Σy=0 → (0 + 1)/(1 + 0 + 1) = 1/2 → loss 1/2
    assert float(LF.dice_loss(logits, target, smooth=1.0)) == pytest.approx(0.25, abs=1e-6)
    # per sample, smooth 0: s0 → loss 0; s1 → 0/1 → loss 1; mean 1/2
    assert float(LF.dice_loss(logits, target, smooth=0.0)) == pytest.approx(0.5, abs=1e-6)
    # batch, smooth 0: Σp·y = 1, Σp = 2, Σy = 1 → 2/3 → loss 1/3
    value = LF.dice_loss(logits, target, smooth=0.0, batch=True)
    assert float(value) == pytest.approx(1 / 3, abs=1e-6)
    # batch, smooth 1: (2 + 1)/(2 + 1 + 1) = 3/4 → loss 1/4
    value = LF.dice_loss(logits, target, smooth=1.0, batch=True)
    assert float(value) == pytest.approx(0.25, abs=1e-6)


def test_dice_empty_channel_with_zero_smooth_is_one_not_nan() -> None:
    probs = torch.zeros(1, 2, 3, 3)
    probs[:, 0] = 1.0
    onehot = probs.clone()  # background only: the fg channel is empty in both
    value = LF.soft_dice(probs, onehot, smooth=0.0)
    assert float(value) == 1.0


@pytest.mark.parametrize("dims", [2, 3])
def test_focal_hand_value(dims: int) -> None:
    logits, target = _toy(dims)
    # p_t per voxel: [3/4, 3/4, 1/4, 3/4]; (1 − p_t)^2 · (−ln p_t):
    #   3/4 → (1/4)^2 · A = A/16 = 0.017980;  1/4 → (3/4)^2 · B = 9B/16 = 0.779791
    expected = (3 * A / 16 + 9 * B / 16) / 4  # = 0.208433
    assert float(LF.focal_loss(logits, target, gamma=2.0)) == pytest.approx(expected, rel=1e-6)
    # alpha 0.25: voxel 0 is foreground (×0.25), the other three background (×0.75)
    expected_alpha = (0.25 * A / 16 + 0.75 * (A / 16 + 9 * B / 16 + A / 16)) / 4
    value = LF.focal_loss(logits, target, gamma=2.0, alpha=0.25)
    assert float(value) == pytest.approx(expected_alpha, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("multilabel", [False, True])
def test_focal_gradient_is_finite_for_certain_predictions(gamma: float, multilabel: bool) -> None:
    # p_t = 1 in float32: (1 − p_t)^gamma has an infinite slope there when gamma < 1
    logits = torch.tensor([0.0, 100.0]).reshape(1, 2, 1, 1).requires_grad_()
    target = torch.ones(1, 2, 1, 1) if multilabel else torch.ones(1, 1, 1, dtype=torch.long)
    LF.focal_loss(logits, target, gamma=gamma, multilabel=multilabel).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_focal_with_gamma_zero_is_cross_entropy(rng: np.random.Generator) -> None:
    logits = torch.from_numpy(rng.normal(size=(2, 3, 4, 4, 4))).float()
    target = torch.from_numpy(rng.integers(0, 3, size=(2, 4, 4, 4)))
    assert float(LF.focal_loss(logits, target, gamma=0.0)) == pytest.approx(
        float(LF.cross_entropy(logits, target)), rel=1e-5
    )


# --------------------------------------------------------------------------- multilabel


def _multilabel_toy() -> tuple[torch.Tensor, torch.Tensor]:
    """K=2 label channels, 2 voxels; logits ±ln 3 → sigmoid 3/4 or 1/4.

    channel 0: logits [ln3, −ln3] → p = [3/4, 1/4], target [1, 1]
    channel 1: logits [ln3,  ln3] → p = [3/4, 3/4], target [0, 1]
    """
    logits = torch.tensor([[LN3, -LN3], [LN3, LN3]]).reshape(1, 2, 1, 2)
    target = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    return logits, target


def test_multilabel_bce_hand_value() -> None:
    logits, target = _multilabel_toy()
    # ch0: −ln 3/4 = A, −ln 1/4 = B;  ch1: −ln(1 − 3/4) = B, −ln 3/4 = A  → mean (2A + 2B)/4
    expected = (2 * A + 2 * B) / 4
    assert float(LF.binary_cross_entropy(logits, target, multilabel=True)) == pytest.approx(
        expected, rel=1e-6
    )


def test_multilabel_dice_hand_value() -> None:
    logits, target = _multilabel_toy()
    # ch0: Σp·y = 1, Σp = 1, Σy = 2 → (2 + 1)/(1 + 2 + 1) = 3/4 → loss 1/4
    # ch1: Σp·y = 3/4, Σp = 3/2, Σy = 1 → (3/2 + 1)/(3/2 + 1 + 1) = 5/7 → loss 2/7
    expected = (1 / 4 + 2 / 7) / 2
    value = LF.dice_loss(logits, target, multilabel=True)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # include_background has no effect: both channels are labels
    value_bg = LF.dice_loss(logits, target, multilabel=True, include_background=False)
    assert float(value_bg) == pytest.approx(expected, rel=1e-6)


def test_multilabel_focal_hand_value() -> None:
    logits, target = _multilabel_toy()
    # p_t: ch0 [3/4, 1/4], ch1 [1/4, 3/4] → two of A/16, two of 9B/16
    expected = (2 * A / 16 + 2 * 9 * B / 16) / 4
    value = LF.focal_loss(logits, target, gamma=2.0, multilabel=True)
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_multilabel_index_map_target_matches_channels() -> None:
    index_map = torch.tensor([[0, 1, 2, 2]]).reshape(1, 1, 4)
    channels = LF.multilabel_target(index_map, 2)
    assert channels.shape == (1, 2, 1, 4)
    assert channels[0, 0, 0].tolist() == [0, 1, 0, 0]
    assert channels[0, 1, 0].tolist() == [0, 0, 1, 1]
    logits = torch.randn(1, 2, 1, 4)
    for fn in (LF.binary_cross_entropy, LF.dice_loss, LF.focal_loss):
        assert float(fn(logits, index_map, multilabel=True)) == pytest.approx(
            float(fn(logits, channels, multilabel=True)), rel=1e-6
        )
    with pytest.raises(ValueError, match="label 3"):
        LF.multilabel_target(torch.tensor([[3]]), 2)


# --------------------------------------------------------------------------- gradients


_LOSS_FNS = {
    "bce": lambda x, t, ml: LF.binary_cross_entropy(x, t, multilabel=ml),
    "ce": lambda x, t, ml: LF.cross_entropy(x, t),
    "weighted_ce": lambda x, t, ml: LF.cross_entropy(x, t, weight=[0.2, 1.0, 3.0]),
    "dice": lambda x, t, ml: LF.dice_loss(x, t, multilabel=ml),
    "dice_batch_bg": lambda x, t, ml: LF.dice_loss(
        x, t, batch=True, include_background=True, multilabel=ml
    ),
    "focal": lambda x, t, ml: LF.focal_loss(x, t, gamma=2.0, alpha=0.25, multilabel=ml),
}


@pytest.mark.parametrize("name", sorted(_LOSS_FNS))
@pytest.mark.parametrize("dims", [2, 3])
def test_sgd_step_on_logits_lowers_loss_and_raises_true_class(name: str, dims: int) -> None:
    gen = torch.Generator().manual_seed(0)
    spatial = (5, 6) if dims == 2 else (3, 4, 5)
    logits = torch.randn(2, 3, *spatial, generator=gen, requires_grad=True)
    target = torch.randint(0, 3, (2, *spatial), generator=gen)
    target[0, (0,) * dims] = 1  # every class present somewhere
    target[1, (0,) * dims] = 2
    loss = _LOSS_FNS[name](logits, target, False)
    loss.backward()
    grad = logits.grad
    assert grad is not None and torch.isfinite(grad).all()
    # the gradient pushes every voxel's true-class logit up (for dice without the background
    # channel too: raising the background logit lowers the false foreground probabilities)
    true_grad = grad.gather(1, target.unsqueeze(1)).squeeze(1)
    assert (true_grad < 0).all()
    with torch.no_grad():
        stepped = logits - 0.1 * grad / grad.abs().max()
        assert float(_LOSS_FNS[name](stepped, target, False)) < float(loss)


@pytest.mark.parametrize("name", ["bce", "dice", "focal"])
@pytest.mark.parametrize("dims", [2, 3])
def test_multilabel_gradient_direction(name: str, dims: int) -> None:
    gen = torch.Generator().manual_seed(1)
    spatial = (4, 5) if dims == 2 else (3, 3, 4)
    logits = torch.randn(2, 2, *spatial, generator=gen, requires_grad=True)
    target = (torch.rand(2, 2, *spatial, generator=gen) > 0.5).float()
    loss = _LOSS_FNS[name](logits, target, True)
    loss.backward()
    grad = logits.grad
    assert grad is not None
    on = target > 0
    assert (grad[on] < 0).all()  # channels that are on: logit pushed up
    assert (grad[~on] > 0).all()  # channels that are off: logit pushed down
    with torch.no_grad():
        stepped = logits - 0.1 * grad / grad.abs().max()
        assert float(_LOSS_FNS[name](stepped, target, True)) < float(loss)


# --------------------------------------------------------------------------- references, shapes


def _dice_reference(probs: np.ndarray, onehot: np.ndarray, smooth: float, batch: bool) -> float:
    """Loop version of the soft Dice loss with background included."""
    b, k = probs.shape[:2]
    if batch:
        vals = []
        for c in range(k):
            inter = sum(float((probs[s, c] * onehot[s, c]).sum()) for s in range(b))
            den = sum(float(probs[s, c].sum() + onehot[s, c].sum()) for s in range(b))
            vals.append(1 - (2 * inter + smooth) / (den + smooth))
        return float(np.mean(vals))
    vals = []
    for s in range(b):
        for c in range(k):
            inter = float((probs[s, c] * onehot[s, c]).sum())
            den = float(probs[s, c].sum() + onehot[s, c].sum())
            vals.append(1 - (2 * inter + smooth) / (den + smooth))
    return float(np.mean(vals))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 4),
    dims=st.sampled_from([2, 3]),
    smooth=st.sampled_from([0.5, 1.0, 2.0]),
    batch=st.booleans(),
)
def test_soft_dice_matches_loop_reference(
    seed: int, k: int, dims: int, smooth: float, batch: bool
) -> None:
    rng = np.random.default_rng(seed)
    spatial = (4, 5) if dims == 2 else (3, 3, 4)
    logits = torch.from_numpy(rng.normal(size=(2, k, *spatial))).float()
    target = torch.from_numpy(rng.integers(0, k, size=(2, *spatial)))
    probs = logits.softmax(1).double().numpy()
    onehot = LF.one_hot(target, k).double().numpy()
    value = LF.dice_loss(logits, target, smooth=smooth, batch=batch, include_background=True)
    expected = _dice_reference(probs, onehot, smooth, batch)
    assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert 0.0 <= float(value) <= 1.0


def test_perfect_prediction_gives_near_zero_losses() -> None:
    target = torch.tensor([[0, 1], [1, 0]]).reshape(1, 2, 2)
    logits = LF.one_hot(target, 2) * 40 - 20  # true class +20, other −20
    assert float(LF.cross_entropy(logits, target)) < 1e-6
    assert float(LF.binary_cross_entropy(logits, target)) < 1e-6
    assert float(LF.focal_loss(logits, target)) < 1e-6
    assert float(LF.dice_loss(logits, target, smooth=0.0)) < 1e-6


def test_losses_are_float32_under_bfloat16_logits() -> None:
    logits = torch.randn(1, 2, 4, 4).bfloat16()
    target = torch.randint(0, 2, (1, 4, 4))
    assert LF.dice_loss(logits, target).dtype == torch.float32
    assert LF.cross_entropy(logits, target).dtype == torch.float32


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"target shape \(1, 4, 5\).*logits \(1, 2, 4, 4\)"):
        LF.cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_class_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="class 2 but the model has 2 classes"):
        LF.dice_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 2))


# --------------------------------------------------------------------------- class weights


def test_class_frequency_weights_on_crafted_labels() -> None:
    # 100 voxels: 90 background, 9 class 1, 1 class 2; class 3 absent
    a = np.zeros(60, dtype=np.uint8)
    a[:9] = 1
    b = np.zeros((5, 8), dtype=np.int64)
    b[0, 0] = 2
    weights = LF.class_frequency_weights([a, b], num_classes=4)
    # inverse frequencies 100/90, 100/9, 100/1, (absent → 0); normalised to sum 4
    inverse = np.array([100 / 90, 100 / 9, 100.0, 0.0])
    expected = inverse * 4 / inverse.sum()
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert sum(weights) == pytest.approx(4.0)
    assert weights[3] == 0.0
    # ratios are the inverse frequency ratios
    assert weights[1] / weights[0] == pytest.approx(10.0)


def test_class_frequency_weights_uniform_are_all_one() -> None:
    label = np.array([0, 1, 2, 0, 1, 2])
    assert LF.class_frequency_weights([label], 3) == pytest.approx([1.0, 1.0, 1.0])


def test_class_frequency_weights_errors() -> None:
    with pytest.raises(ValueError, match="label value 5 outside"):
        LF.class_frequency_weights([np.array([0, 5])], 2)
    with pytest.raises(ValueError, match="no labelled voxels"):
        LF.class_frequency_weights([np.zeros(0, dtype=np.uint8)], 2)
