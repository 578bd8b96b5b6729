"""Segmentation losses as pure tensor functions (2D and 3D alike).

Conventions shared by every function here:

* ``logits``: float tensor ``(B, K, *spatial)``, the raw network output.  Losses are computed in
  float32 whatever the input dtype (bf16/fp16 under AMP).
* multiclass (``multilabel=False``): ``K`` = number of classes including background, softmax
  over the channel axis, ``target`` an int64 class-index map ``(B, *spatial)``.
* multilabel (``multilabel=True``): ``K`` = number of labels (no background channel), a sigmoid
  per channel, ``target`` either binary ``(B, K, *spatial)`` (float or int) or an index map
  ``(B, *spatial)`` whose value ``k + 1`` switches channel ``k`` on (0 = background, every
  channel off).  See :func:`multilabel_target`.

    >>> logits = torch.zeros(1, 2, 4, 4)                  # p = 0.5 everywhere
    >>> target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> float(cross_entropy(logits, target))              # ln 2
    0.6931...
    >>> soft_dice(logits.softmax(1), one_hot(target, 2), include_background=True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

__all__ = [
    "binary_cross_entropy",
    "class_frequency_weights",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "multilabel_target",
    "one_hot",
    "soft_dice",
]

_EPS = 1e-8


# --------------------------------------------------------------------------- targets


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> None:
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, K, *spatial), got shape {tuple(logits.shape)}")
    spatial = (logits.shape[0], *logits.shape[2:])
    if multilabel and target.shape == logits.shape:
        return
    if tuple(target.shape) != tuple(spatial):
        want = f"{tuple(spatial)}" + (f" or {tuple(logits.shape)}" if multilabel else "")
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
            f"expected {want}"
        )


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Index map ``(B, *spatial)`` → float one-hot ``(B, K, *spatial)``.

    Raises:
        ValueError: a value outside ``[0, num_classes)``.
    """
    target = target.long()
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"target holds class {hi if hi >= num_classes else lo} but the model has "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
    out = F.one_hot(target, num_classes)  # (B, *spatial, K)
    return out.movedim(-1, 1).float()


def multilabel_target(index_map: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Index map ``(B, *spatial)`` → float multilabel target ``(B, K, *spatial)``.

    Channel ``k`` is 1 where ``index_map == k + 1``; value 0 switches every channel off.

    Raises:
        ValueError: a value outside ``[0, num_labels]``.
    """
    index_map = index_map.long()
    if index_map.numel():
        lo, hi = int(index_map.min()), int(index_map.max())
        if lo < 0 or hi > num_labels:
            raise ValueError(
                f"target holds label {hi if hi > num_labels else lo} but the model has "
                f"{num_labels} label channel(s) (values 1..{num_labels}, 0 = none)"
            )
    return one_hot(index_map, num_labels + 1)[:, 1:]


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits, target): an index map (multiclass) or float channels (multilabel)."""
    _check_shapes(logits, target, multilabel)
    logits = logits.float()
    if multilabel:
        if target.shape == logits.shape:
            return logits, target.float()
        return logits, multilabel_target(target, logits.shape[1])
    return logits, target.long()


# --------------------------------------------------------------------------- cross-entropies


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Categorical cross-entropy on softmax probabilities, averaged over voxels.

    With ``weight`` (one per class) the mean is weighted: ``Σ w_y·(−log p_y) / Σ w_y`` over
    voxels (``torch.nn.functional.cross_entropy``'s convention); a batch whose voxels all have
    weight 0 gives 0 instead of NaN.

    Args:
        logits: ``(B, K, *spatial)``.
        target: int ``(B, *spatial)`` class indices.
        weight: optional per-class weights, length ``K``.

    Returns:
        Scalar tensor.
    """
    logits, target = _prepare(logits, target, multilabel=False)
    nll = F.cross_entropy(logits, target, reduction="none")  # (B, *spatial)
    if weight is None:
        return nll.mean()
    w = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if w.numel() != logits.shape[1]:
        raise ValueError(f"got {w.numel()} class weights for {logits.shape[1]} classes")
    per_voxel = w[target]
    return (per_voxel * nll).sum() / per_voxel.sum().clamp_min(_EPS)


def binary_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, multilabel: bool = False
) -> torch.Tensor:
    """Binary cross-entropy per foreground channel, averaged over channels and voxels.

    * multilabel: BCE-with-logits of every channel's sigmoid against its binary target.
    * multiclass: one-vs-rest on the *softmax* probability ``p_k`` of each foreground class
      ``k = 1..K-1`` against ``target == k``; for ``K = 2`` this is BCE-with-logits of
      ``logit_1 − logit_0`` (then identical to :func:`cross_entropy`).  Computed from
      log-softmax, so it is stable for large logits.

    Args:
        logits: ``(B, K, *spatial)``; multiclass needs ``K ≥ 2``.
        target: see the module docstring.
        multilabel: sigmoid per channel instead of softmax.

    Returns:
        Scalar tensor.
    """
    logits, target = _prepare(logits, target, multilabel)
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, target)
    k = logits.shape[1]
    if k < 2:
        raise ValueError("multiclass bce needs at least 2 channels (background + foreground)")
    log_p = logits.log_softmax(dim=1)
    # log(1 − p_k) = logsumexp_{j≠k} logit_j − logsumexp_j logit_j
    total = torch.logsumexp(logits, dim=1, keepdim=True)
    losses = []
    for c in range(1, k):
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
        log_not = torch.logsumexp(others, dim=1) - total[:, 0]
        y = (target == c).float()
        losses.append(-(y * log_p[:, c] + (1.0 - y) * log_not))
    return torch.stack(losses, dim=1).mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    multilabel: bool = False,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): ``−α_t (1 − p_t)^γ log p_t``, averaged over voxels.

    * multiclass: ``p_t`` is the softmax probability of the true class; ``α_t = alpha`` for a
      foreground voxel and ``1 − alpha`` for background.
    * multilabel: binary focal loss per channel and voxel with the sigmoid; ``α_t = alpha``
      where the channel is on, ``1 − alpha`` where off.

    ``gamma = 0`` and ``alpha = None`` give plain (binary) cross-entropy.

    Returns:
        Scalar tensor.
    """
    logits, target = _prepare(logits, target, multilabel)
    if multilabel:
        log_p = F.logsigmoid(logits)
        log_not = F.logsigmoid(-logits)
        log_pt = target * log_p + (1.0 - target) * log_not
        positive = target
    else:
        log_pt = logits.log_softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        positive = (target > 0).float()
    loss = -log_pt
    if gamma > 0:
        # clamped away from 0 so that 0 < gamma < 1 keeps finite gradients where p_t = 1
        loss = loss * (1.0 - log_pt.exp()).clamp_min(_EPS) ** gamma
    if alpha is not None:
        loss = loss * (alpha * positive + (1.0 - alpha) * (1.0 - positive))
    return loss.mean()


# --------------------------------------------------------------------------- dice


def soft_dice(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    smooth: float = 1.0,
    batch: bool = False,
    include_background: bool = False,
) -> torch.Tensor:
    """Soft Dice *loss* from probabilities: ``1 − (2Σp·y + s) / (Σp + Σy + s)``.

    Sums run over the spatial axes per (sample, channel), or with ``batch=True`` over the batch
    and spatial axes per channel (nnU-Net's batch dice).  The loss is averaged over channels
    (channel 0 left out unless ``include_background``) and, per sample, over samples.  With
    ``smooth = 0`` an empty channel (Σp + Σy = 0) gives loss 1, not NaN.

    Args:
        probs: ``(B, K, *spatial)`` probabilities.
        onehot: ``(B, K, *spatial)`` binary targets of the same shape.
        smooth: the additive smoothing term ``s``.
        batch: pool the sums over the batch.
        include_background: keep channel 0 in the average.

    Returns:
        Scalar tensor in [0, 1].
    """
    if probs.shape != onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and targets {tuple(onehot.shape)} differ")
    if not include_background:
        if probs.shape[1] < 2:
            raise ValueError("without the background channel there is no channel left")
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    axes = tuple(range(2, probs.ndim))
    if batch:
        axes = (0, *axes)
    intersection = (probs * onehot).sum(axes)
    denominator = probs.sum(axes) + onehot.sum(axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth).clamp_min(_EPS)
    return 1.0 - dice.mean()


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1.0,
    batch: bool = False,
    include_background: bool = False,
    multilabel: bool = False,
) -> torch.Tensor:
    """:func:`soft_dice` on softmax (multiclass) or sigmoid (multilabel) probabilities.

    Multilabel channels are all foreground labels, so every channel is averaged and
    ``include_background`` has no effect there.
    """
    logits, target = _prepare(logits, target, multilabel)
    if multilabel:
        return soft_dice(logits.sigmoid(), target, smooth, batch, include_background=True)
    onehot = one_hot(target, logits.shape[1])
    return soft_dice(logits.softmax(dim=1), onehot, smooth, batch, include_background)


# --------------------------------------------------------------------------- class weights


def class_frequency_weights(
    label_arrays: Sequence[npt.NDArray[np.integer] | Mapping[int, int]], num_classes: int
) -> list[float]:
    """Per-class weights inversely proportional to the class frequency in ``label_arrays``.

    ``w_c ∝ 1 / f_c`` with ``f_c`` the share of voxels of class ``c`` over all arrays, then
    normalised so that the weights sum to ``num_classes`` (equal frequencies give all 1.0, i.e.
    plain cross-entropy).  A class that never occurs gets weight 0: it is never a target, so
    its weight would be unused, and 0 keeps the others from being diluted.

    Args:
        label_arrays: integer label maps of any shape (the training labels), or each case's
            voxel count per label value (``{value: count}``, what the preprocessing cache keeps).
        num_classes: number of classes including background.

    Returns:
        ``num_classes`` floats.

    Raises:
        ValueError: no voxels at all, or a label value outside ``[0, num_classes)``.
    """
    counts = np.zeros(num_classes, dtype=np.float64)
    for array in label_arrays:
        if isinstance(array, Mapping):  # a case's voxel count per label value (the cache's)
            values = np.array(sorted(array), dtype=np.int64)
            found = np.array([array[v] for v in sorted(array)], dtype=np.float64)
        else:
            values, found = np.unique(np.asarray(array).ravel(), return_counts=True)
            values = values.astype(np.int64)
        if values.size == 0:
            continue
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"label value {hi if hi >= num_classes else lo} outside the model's "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
        counts[values] += found
    total = counts.sum()
    if total == 0:
        raise ValueError("no labelled voxels to compute class frequencies from")
    present = counts > 0
    inverse = np.zeros(num_classes, dtype=np.float64)
    inverse[present] = total / counts[present]
    weights = inverse * num_classes / inverse.sum()
    return [float(w) for w in weights]
