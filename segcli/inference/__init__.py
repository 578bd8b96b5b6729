"""Sliding-window inference (SPEC.md, "Inference"): window placement, blending, stitching.

>>> from segcli.inference import sliding_window
>>> probs = sliding_window(model.eval(), image, patch_size=(64, 64, 64), overlap=0.5)
>>> labels = probs.argmax(0)
"""

from segcli.inference.sliding_window import sliding_window
from segcli.inference.windows import gaussian_weights, window_starts

__all__ = ["gaussian_weights", "sliding_window", "window_starts"]
