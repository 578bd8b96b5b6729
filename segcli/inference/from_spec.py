"""Whole-image probabilities with a spec's ``inference`` settings: the one call of validation
and ``segcli predict``, in the spec's ``inference.precision``.

    >>> from segcli.inference.from_spec import window_probabilities
    >>> probs = window_probabilities(network, image, exp.inference, exp.multilabel, "cpu")

Validation passes ``tta=False`` (speed; the spec's ``inference.tta`` is for predict).  A new way
of running a network over an image (another stitching, another precision) hooks in here once:
networks whose output is smaller than their input (valid padding) run by overlap-tile
(:mod:`segcli.inference.overlap_tile`), all others by sliding windows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from segcli.inference.overlap_tile import predict_probabilities

if TYPE_CHECKING:
    from segcli.config.schema import InferenceSpec

__all__ = ["window_probabilities"]


def window_probabilities(
    network: nn.Module,
    image: torch.Tensor,
    spec: InferenceSpec,
    multilabel: bool,
    device: str,
    tta: bool | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Stitched probabilities ``(classes, *spatial)`` of ``image`` ``(C, *spatial)``.

    Args:
        spec: ``patch_size``, ``overlap``, ``blend``, ``batch_size``, ``pad_mode`` and
            ``pad_value`` are used as given; ``tta`` unless overridden here.
        tta: None = ``spec.tta``.
        precision: the network's precision (``auto``, ``fp32``, ``bf16``, ``fp16``; see
            :mod:`segcli.precision`); None = ``spec.precision``.

    Raises:
        ValueError: the network cannot run windows (or overlap tiles) of ``spec.patch_size``
            (see :func:`segcli.inference.sliding_window` and
            :func:`segcli.inference.overlap_tile.tile_geometry`).
    """
    return predict_probabilities(
        network,
        image,
        patch_size=spec.patch_size,
        overlap=spec.overlap,
        blend=spec.blend,
        batch_size=spec.batch_size,
        tta=spec.tta if tta is None else tta,
        multilabel=multilabel,
        device=device,
        pad_mode=spec.pad_mode,
        pad_value=spec.pad_value,
        precision=spec.precision if precision is None else precision,
    )
