"""Thin ``nn.Module`` wrappers over :mod:`segcli.losses.functional`.

Every module is called as ``loss(logits, target)``:

* ``logits``: ``(B, K, *spatial)`` float (2D or 3D).
* ``target``: multiclass → int64 class indices ``(B, *spatial)``; multilabel → binary
  ``(B, K, *spatial)`` or an index map ``(B, *spatial)`` whose value ``k + 1`` marks label
  channel ``k`` (see :func:`segcli.losses.functional.multilabel_target`).

    >>> loss = DiceCELoss(multilabel=False)
    >>> value = loss(torch.randn(2, 3, 16, 16, 16), torch.randint(0, 3, (2, 16, 16, 16)))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segcli.losses import functional as LF

__all__ = ["BCELoss", "CELoss", "DiceCELoss", "DiceLoss", "FocalLoss", "WeightedCELoss"]


class BCELoss(nn.Module):
    """Binary cross-entropy per foreground channel (see :func:`~LF.binary_cross_entropy`)."""

    def __init__(self, multilabel: bool = False) -> None:
        super().__init__()
        self.multilabel = multilabel

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF.binary_cross_entropy(logits, target, multilabel=self.multilabel)


class CELoss(nn.Module):
    """Categorical cross-entropy over softmax classes (multiclass only)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF.cross_entropy(logits, target)


class WeightedCELoss(nn.Module):
    """Cross-entropy with one weight per class (weighted mean over voxels)."""

    weight: torch.Tensor

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor([float(w) for w in weights]))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF.cross_entropy(logits, target, weight=self.weight)

    def extra_repr(self) -> str:
        return "weights=[" + ", ".join(f"{w:.4g}" for w in self.weight.tolist()) + "]"


class DiceLoss(nn.Module):
    """Soft Dice loss, the lecture's form, on softmax or sigmoid probabilities."""

    def __init__(
        self,
        smooth: float = 1.0,
        batch: bool = False,
        include_background: bool = False,
        multilabel: bool = False,
    ) -> None:
        super().__init__()
        self.smooth = smooth
        self.batch = batch
        self.include_background = include_background
        self.multilabel = multilabel

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF.dice_loss(
            logits,
            target,
            smooth=self.smooth,
            batch=self.batch,
            include_background=self.include_background,
            multilabel=self.multilabel,
        )


class DiceCELoss(nn.Module):
    """``dice_weight · dice + ce_weight · ce`` (BCE with the sigmoid when multilabel)."""

    def __init__(
        self,
        smooth: float = 1.0,
        batch: bool = False,
        include_background: bool = False,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        multilabel: bool = False,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(smooth, batch, include_background, multilabel)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.multilabel = multilabel

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            ce = LF.binary_cross_entropy(logits, target, multilabel=True)
        else:
            ce = LF.cross_entropy(logits, target)
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * ce


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) with focusing ``gamma`` and optional ``alpha``."""

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = None, multilabel: bool = False
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.multilabel = multilabel

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF.focal_loss(
            logits, target, gamma=self.gamma, alpha=self.alpha, multilabel=self.multilabel
        )
