"""Probabilities → label map: the one decoding rule of validation and ``segcli predict``.

    >>> import numpy as np
    >>> from segcli.inference.decode import decode_labels
    >>> probs = np.array([[0.7, 0.2], [0.3, 0.8]])          # (classes, *spatial), softmax
    >>> decode_labels(probs, multilabel=False)
    array([0, 1], dtype=uint8)

Softmax models: the argmax class (ties: the lowest class).  Multilabel models (sigmoid per
label): voxel value ``k + 1`` where channel ``k`` exceeds 0.5 and, where several do, the highest
such ``k`` wins (later labels are drawn on top); 0 where none does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_labels"]


def decode_labels(
    probabilities: np.ndarray,
    multilabel: bool,
    regions: tuple[tuple[int, ...], ...] | None = None,
) -> np.ndarray:
    """Label map ``(*spatial)`` from ``probabilities`` ``(classes, *spatial)``.

    With ``regions`` (a multilabel model trained on nnU-Net-style regions, the spec's
    ``regions``), channels are decoded by :func:`segcli.labels.decode_regions`: regions in
    order, each writing its own label value where it exceeds 0.5, later regions on top.

    Returns uint8 when the values fit (fewer than 256 classes / 255 labels), else uint16.
    """
    channels = probabilities.shape[0]
    if multilabel and regions is not None:
        from segcli.labels import decode_regions

        return decode_regions(probabilities, regions)
    if multilabel:
        labels = np.zeros(probabilities.shape[1:], dtype=np.uint8 if channels < 255 else np.uint16)
        for k in range(channels):  # later labels win where several exceed 0.5
            labels[probabilities[k] > 0.5] = k + 1
        return labels
    return probabilities.argmax(0).astype(np.uint8 if channels <= 256 else np.uint16)
