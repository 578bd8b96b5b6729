"""Region targets for sigmoid (multilabel / region-based) training; see :mod:`segcli.labels`.

>>> import torch
>>> region_target(torch.tensor([[0, 1, 2]]), ((1, 2), (2,))).tolist()
[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]
"""

from __future__ import annotations

import torch

from segcli.labels import Regions

__all__ = ["region_target"]


def region_target(label: torch.Tensor, regions: Regions) -> torch.Tensor:
    """Integer label maps ``(B, *spatial)`` → float region targets ``(B, K, *spatial)``.

    Channel ``k`` is 1 where ``label ∈ regions[k]``, else 0; the same rule as
    :func:`segcli.labels.encode_regions`, on the label's device.
    """
    label = label.long()
    channels = []
    for region in regions:
        values = torch.tensor(region, dtype=label.dtype, device=label.device)
        channels.append(torch.isin(label, values))
    return torch.stack(channels, dim=1).float()
