"""Confidence levels: the one place where expert confidence is compared with a threshold.

Confidence arrives as float levels (e.g. 6/10 stored as uint8 and divided); whether a pixel at level 0.6
passes a threshold of 0.6 must not depend on how the level was rounded, so every comparison (label
strategies, metrics, reference rows) goes through :func:`binarize` with :data:`LEVEL_TOLERANCE`.
"""

from __future__ import annotations

from typing import TypeVar

LEVEL_TOLERANCE = 1e-6

ArrayT = TypeVar("ArrayT")


def binarize(confidence: ArrayT, threshold: float) -> ArrayT:
    """Boolean mask ``confidence >= threshold`` (up to :data:`LEVEL_TOLERANCE`), for a torch tensor or numpy array."""
    return confidence >= threshold - LEVEL_TOLERANCE  # type: ignore[operator,return-value]
