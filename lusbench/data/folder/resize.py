"""The size policy: frames of any size become the dataset's size; label maps keep their labels.

Images are resized with the manifest's ``resize``: ``area`` (Pillow's box filter: each output pixel is the mean
of the input pixels it covers, the right filter for shrinking, no aliasing) or ``bilinear``. Confidence levels
and masks are resized with nearest-neighbour sampling, so every output pixel is a level (or a mask value) that
some input pixel had: interpolating would invent confidences between the declared levels.
"""

from __future__ import annotations

import numpy as np


def resize_image(image: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """``(H, W)`` uint8 to ``size`` = (height, width) with ``policy`` (``area`` or ``bilinear``)."""
    if image.shape == size:
        return image
    from PIL import Image

    method = Image.Resampling.BOX if policy == "area" else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), method))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 or bool labels to ``size`` with nearest-neighbour sampling (label-preserving)."""
    if labels.shape == size:
        return labels
    rows = np.minimum(((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(np.int64), labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]
