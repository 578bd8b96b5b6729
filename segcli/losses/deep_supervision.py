"""The training loss of one network output, or of deep supervision's several outputs.

    >>> from segcli.losses.deep_supervision import compute_loss, loss_target
    >>> target = loss_target(label, num_outputs=3, multilabel=False)      # (B, *spatial)
    >>> loss = compute_loss(loss_fn, [full, half, quarter], target, multilabel=False)

Deep supervision (nnU-Net): output ``i`` is at ``1/2^i`` of the patch size and is scored against
the target downsampled to it (nearest neighbour), with weights ``1/2^i`` normalised to sum to 1.
Networks with valid padding return outputs smaller than the patch, and each stage is cropped
centrally by its own border: a single output is scored against the centre-cropped target; deep
supervision's outputs need ``grids`` (``segcli.models.unet.UNet.deep_supervision_grids``), the
input voxel under each output voxel, and each target keeps exactly those voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segcli.losses.functional import multilabel_target
from segcli.losses.regions import region_target

__all__ = [
    "centre_crop",
    "compute_loss",
    "downsample_target",
    "grid_target",
    "loss_target",
]

#: per axis ``(offsets, strides)`` of one output on the input grid
Grid = tuple[Sequence[int], Sequence[int]]


def loss_target(
    label: torch.Tensor,
    num_outputs: int,
    multilabel: bool,
    regions: tuple[tuple[int, ...], ...] | None = None,
) -> torch.Tensor:
    """``(B, *spatial)`` int labels → the loss's target: the labels themselves (softmax), or
    ``(B, K, *spatial)`` float channels for a multilabel model: channel ``k`` is
    ``label ∈ regions[k]`` (:func:`segcli.losses.regions.region_target`), or without
    ``regions`` ``label == k + 1`` (:func:`segcli.losses.functional.multilabel_target`)."""
    if not multilabel:
        return label
    if regions is not None:
        return region_target(label, regions)
    return multilabel_target(label, num_outputs)


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


def grid_target(target: torch.Tensor, grid: Grid, spatial: tuple[int, ...]) -> torch.Tensor:
    """The voxels of ``target`` under an output of size ``spatial``: per trailing axis
    ``offset + j·stride`` for ``j < spatial`` (``grid`` = ``(offsets, strides)``).

    Raises:
        ValueError: the grid runs outside the target.
    """
    offsets, strides = grid
    n = len(spatial)
    index = [slice(None)] * (target.ndim - n)
    for axis, (size, o, s) in enumerate(zip(spatial, offsets, strides, strict=True)):
        have = target.shape[target.ndim - n + axis]
        if o < 0 or o + (size - 1) * s >= have:
            raise ValueError(
                f"output of {size} voxels at offset {o}, stride {s} runs outside the target's "
                f"{have} voxels (axis {axis})"
            )
        index.append(slice(o, o + (size - 1) * s + 1, s))
    return target[tuple(index)]


def compute_loss(
    loss_fn: nn.Module,
    output: torch.Tensor | list[torch.Tensor],
    target: torch.Tensor,
    multilabel: bool,
    grids: Sequence[Grid] | None = None,
) -> torch.Tensor:
    """Loss for one output, or the deep-supervision sum with weights 1/2^i (normalised).

    Args:
        loss_fn: the loss module (``segcli.losses.build_loss``).
        output: logits ``(B, K, *spatial)``, or a list of them (full size first).
        target: from :func:`loss_target`, at the patch size.
        multilabel: whether ``target`` holds float channels.
        grids: per output of a list, where it sits on the target (needed with valid padding,
            see the module docstring); None: the outputs cover the patch, output ``i``
            scored against the target downsampled to its size.
    """
    if isinstance(output, list | tuple):
        weights = [0.5**i for i in range(len(output))]
        total = sum(weights)
        loss = output[0].new_zeros(())
        for i, (w, out) in enumerate(zip(weights, output, strict=True)):
            spatial = tuple(out.shape[2:])
            if grids is not None:
                loss = loss + (w / total) * loss_fn(out, grid_target(target, grids[i], spatial))
                continue
            tgt = centre_crop(target, tuple(target.shape[-len(spatial) :]))
            if tuple(tgt.shape[-len(spatial) :]) != spatial:
                tgt = downsample_target(tgt, spatial, multilabel)
            loss = loss + (w / total) * loss_fn(out, tgt)
        return loss
    spatial = tuple(output.shape[2:])
    return loss_fn(output, centre_crop(target, spatial))
