"""The training loss of one network output, or of deep supervision's several outputs.

    >>> from segcli.losses.deep_supervision import compute_loss, loss_target
    >>> target = loss_target(label, num_outputs=3, multilabel=False)      # (B, *spatial)
    >>> loss = compute_loss(loss_fn, [full, half, quarter], target, multilabel=False)

Deep supervision (nnU-Net): output ``i`` is at ``1/2^i`` of the patch size and is scored against
the target downsampled to it (nearest neighbour), with weights ``1/2^i`` normalised to sum to 1.
Networks with valid padding return outputs smaller than the patch: the target is centre-cropped
to the output first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segcli.losses.functional import multilabel_target

__all__ = ["centre_crop", "compute_loss", "downsample_target", "loss_target"]


def loss_target(label: torch.Tensor, num_outputs: int, multilabel: bool) -> torch.Tensor:
    """``(B, *spatial)`` int labels → the loss's target: the labels themselves (softmax), or
    ``(B, K, *spatial)`` float channels for a multilabel model
    (:func:`segcli.losses.functional.multilabel_target`)."""
    return multilabel_target(label, num_outputs) if multilabel else label


def centre_crop(target: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Centre-crop the trailing spatial axes of ``target`` to ``spatial`` (valid-padding nets)."""
    n = len(spatial)
    have = tuple(target.shape[-n:])
    if have == spatial:
        return target
    index = [slice(None)] * (target.ndim - n)
    for h, s in zip(have, spatial, strict=True):
        start = (h - s) // 2
        index.append(slice(start, start + s))
    return target[tuple(index)]


def downsample_target(
    target: torch.Tensor, spatial: tuple[int, ...], multilabel: bool
) -> torch.Tensor:
    """Nearest-neighbour downsampling of a target to a deep-supervision output's size."""
    if multilabel:
        return F.interpolate(target, size=spatial, mode="nearest")
    return (
        F.interpolate(target.unsqueeze(1).float(), size=spatial, mode="nearest").squeeze(1).long()
    )


def compute_loss(
    loss_fn: nn.Module,
    output: torch.Tensor | list[torch.Tensor],
    target: torch.Tensor,
    multilabel: bool,
) -> torch.Tensor:
    """Loss for one output, or the deep-supervision sum with weights 1/2^i (normalised).

    Args:
        loss_fn: the loss module (``segcli.losses.build_loss``).
        output: logits ``(B, K, *spatial)``, or a list of them (full size first).
        target: from :func:`loss_target`, at the patch size.
        multilabel: whether ``target`` holds float channels.
    """
    if isinstance(output, list | tuple):
        weights = [0.5**i for i in range(len(output))]
        total = sum(weights)
        loss = output[0].new_zeros(())
        for w, out in zip(weights, output, strict=True):
            spatial = tuple(out.shape[2:])
            tgt = centre_crop(target, tuple(target.shape[-len(spatial) :]))
            if tuple(tgt.shape[-len(spatial) :]) != spatial:
                tgt = downsample_target(tgt, spatial, multilabel)
            loss = loss + (w / total) * loss_fn(out, tgt)
        return loss
    spatial = tuple(output.shape[2:])
    return loss_fn(output, centre_crop(target, spatial))
