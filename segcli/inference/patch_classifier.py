"""Ciresan-style segmentation: classify the window centred on every pixel, one window at a time.

    >>> import torch
    >>> from segcli.config.schema import PatchCNNSpec
    >>> from segcli.models import build
    >>> from segcli.inference.patch_classifier import classify_every_pixel
    >>> net = build(PatchCNNSpec(filters=2, hidden=3, input_size=19, kernel_sizes=[2, 2],
    ...                          mode="window")).eval()
    >>> classify_every_pixel(net, torch.randn(1, 7, 5), window=19).shape
    torch.Size([2, 7, 5])

The slow, obviously correct way the lecture's sliding-window pixel classifier (Ciresan et al.
2012) segments an image: pad the image by half a window, cut out the ``window``-sized patch
centred on each pixel and run the classifier on it (batched).  ``patch_cnn`` in ``dense`` mode
computes the same numbers in one fully convolutional pass (filter rarefaction); this module is
the reference it is checked and timed against (docs/lecture.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["classify_every_pixel"]

#: the spec's ``pad_mode`` → torch.nn.functional.pad's mode
_TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


def classify_every_pixel(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    window: int | Sequence[int],
    *,
    pad_mode: str = "zeros",
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits of ``model`` for the window centred on every pixel of ``image``.

    Args:
        model: a window classifier mapping ``(B, C, *window)`` to ``(B, classes, 1, …, 1)``
            (``patch_cnn`` in ``window`` mode), on the CPU or the image's device.
        image: ``(C, *spatial)`` float tensor (numpy accepted), 2D or 3D.
        window: the classifier's input size per axis (an int for all axes).
        pad_mode: how the image is extended by half a window: ``zeros``, ``reflect`` or
            ``replicate`` (as the dense network's ``pad_mode``).  The window centred on pixel
            ``i`` starts at ``i − (window − 1) // 2``.
        batch_size: windows per forward pass.

    Returns:
        float32 ``(classes, *spatial)`` logits, one per pixel.

    Raises:
        ValueError: unknown ``pad_mode``, a bad ``batch_size`` or a model that does not give one
            output per window.
    """
    image = torch.as_tensor(image).to(torch.float32)
    dims = image.ndim - 1
    sizes = (window,) * dims if isinstance(window, int) else tuple(int(w) for w in window)
    if pad_mode not in _TORCH_PAD:
        raise ValueError(f"pad_mode must be one of {', '.join(_TORCH_PAD)}, got {pad_mode!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    pads: list[int] = []
    for w in reversed(sizes):  # F.pad lists the last axis first
        pads += [(w - 1) // 2, w - 1 - (w - 1) // 2]
    padded = F.pad(image[None], pads, mode=_TORCH_PAD[pad_mode])[0]
    spatial = tuple(image.shape[1:])
    positions = list(itertools.product(*(range(n) for n in spatial)))
    outputs: list[torch.Tensor] = []
    with torch.inference_mode():
        for first in range(0, len(positions), batch_size):
            chunk = positions[first : first + batch_size]
            batch = torch.stack(
                [
                    padded[
                        (slice(None), *(slice(p, p + w) for p, w in zip(pos, sizes, strict=True)))
                    ]
                    for pos in chunk
                ]
            )
            out = model(batch)
            if out.shape[2:] != (1,) * dims:
                raise ValueError(
                    f"the model maps a {list(sizes)} window to {list(out.shape[2:])}, not one "
                    "output per window (use patch_cnn in window mode)"
                )
            outputs.append(out.reshape(out.shape[0], out.shape[1]).float())
    logits = torch.cat(outputs)  # (pixels, classes), pixels in C order
    return logits.T.reshape(logits.shape[1], *spatial).contiguous()
