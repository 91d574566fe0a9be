"""A dataset from plain float arrays, checked: what a dataset plugin for your own data usually needs.

:class:`~lusbench.data.dataset.LUSDataset` stores compact integer levels. Casting float arrays to them by hand
silently turns NaN into 0 and a negative confidence into 255, and lets 0..255 images pass as if they were
0..1; :func:`dataset_from_arrays` refuses each of these with a ``ValueError`` naming the array, the frame and
the value, and quantizes only values that already lie on the declared confidence scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lusbench.data.dataset import DEFAULT_CLASSES, LUSDataset

#: How far a confidence value may lie from a level of the scale (float rounding of ``level / scale``).
GRID_TOLERANCE = 1e-4


def _frame_of(bad: np.ndarray) -> int:
    return int(np.argwhere(bad)[0][0])


def _unit_range(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    nan = ~np.isfinite(values)
    if nan.any():
        raise ValueError(f"{name} has {int(nan.sum())} NaN or infinite values (first in frame {_frame_of(nan)})")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        hint = " (it looks like 0..255: divide by 255)" if high > 1 and high <= 255 and low >= 0 else ""
        outside = (values < 0) | (values > 1)
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:g}, {high:g}] (first outside in frame "
                         f"{_frame_of(outside)}){hint}")
    return values


def dataset_from_arrays(name: str, images: np.ndarray, confidence: np.ndarray, patient: Sequence[int] | np.ndarray, *,
                        confidence_scale: int, visit: Sequence[int] | np.ndarray | None = None,
                        zone: Sequence[int] | np.ndarray | None = None, classes: Sequence[str] = DEFAULT_CLASSES,
                        true_masks: np.ndarray | None = None, rater_masks: np.ndarray | None = None,
                        visits: dict[str, np.ndarray] | None = None,
                        patients: dict[str, np.ndarray] | None = None) -> LUSDataset:
    """A validated :class:`LUSDataset` from float arrays.

    - ``images``: ``(N, H, W)`` grey levels in [0, 1] (divide 8-bit images by 255 first);
    - ``confidence``: ``(N, K, H, W)`` in [0, 1], every value a level ``j / confidence_scale`` (e.g. 0.3 on a
      scale of 10); a value between levels is an error, not rounded;
    - ``patient``: ``(N,)`` patient id of every frame; ``visit`` (default 1) and ``zone`` (default 0) likewise;
    - ``true_masks`` ``(N, K, H, W)`` and ``rater_masks`` ``(N, R, K, H, W)``: 0/1 or bool;
    - ``visits`` / ``patients``: the clinical tables of :class:`LUSDataset`.

    Raises ``ValueError`` naming the first problem.
    """
    if not isinstance(confidence_scale, (int, np.integer)) or not 1 <= int(confidence_scale) <= 255:
        raise ValueError(f"confidence_scale must be an integer in 1..255, got {confidence_scale!r}")
    images = _unit_range("images", images)
    confidence = _unit_range("confidence", confidence)
    levels = confidence * confidence_scale
    off_grid = np.abs(levels - np.round(levels)) > GRID_TOLERANCE * confidence_scale
    if off_grid.any():
        where = tuple(int(i) for i in np.argwhere(off_grid)[0])
        raise ValueError(f"confidence {confidence[where]:g} (frame {where[0]}, class {where[1]}) is not a level of the "
                         f"declared scale {confidence_scale} (levels are j/{confidence_scale})")
    n = images.shape[0] if images.ndim else 0

    def ids(label: str, values: Sequence[int] | np.ndarray | None, default: int) -> np.ndarray:
        arr = np.full(n, default, dtype=np.int64) if values is None else np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"{label} must have one entry per frame ({n}), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            as_int = arr.astype(np.int64) if np.issubdtype(arr.dtype, np.number) and np.isfinite(arr).all() else None
            if as_int is None or not np.array_equal(as_int, arr):
                raise ValueError(f"{label} must hold integers, got {arr.dtype} values such as {arr.ravel()[:1].tolist()}")
            arr = as_int
        return arr.astype(np.int64)

    def masks(label: str, values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        arr = np.asarray(values)
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{label} must be 0/1 or bool")
        return arr.astype(bool)

    return LUSDataset(
        name=name,
        images=np.round(images * 255).astype(np.uint8),
        confidence=np.round(levels).astype(np.uint8),
        confidence_scale=int(confidence_scale),
        patient=ids("patient", patient, 0),
        visit=ids("visit", visit, 1),
        zone=ids("zone", zone, 0),
        classes=tuple(classes),
        true_masks=masks("true_masks", true_masks),
        rater_masks=masks("rater_masks", rater_masks),
        visits=visits,
        patients=patients,
    )
