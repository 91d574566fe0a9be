"""A dataset as a flat dict of named arrays, and back: the layout of ``data export --format npz`` and of the cache.

Keys: ``name``, ``classes``, ``confidence_scale``, ``images``, ``confidence``, ``patient``, ``visit``, ``zone``,
``true_masks`` and ``rater_masks`` (where present), ``visits.<column>``, ``patients.<column>`` and
``frame_info.<column>`` (docs/cli/data.md). No array needs a pickle to load.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lusbench.data.dataset import LUSDataset

TABLES = ("visits", "patients", "frame_info")


def dataset_arrays(dataset: LUSDataset) -> dict[str, np.ndarray]:
    """Every field of ``dataset`` under its key."""
    arrays: dict[str, Any] = {
        "name": np.array(dataset.name),
        "classes": np.array(dataset.classes),
        "confidence_scale": np.array(dataset.confidence_scale, dtype=np.int64),
        "images": dataset.images,
        "confidence": dataset.confidence,
        "patient": dataset.patient,
        "visit": dataset.visit,
        "zone": dataset.zone,
    }
    if dataset.true_masks is not None:
        arrays["true_masks"] = dataset.true_masks
    if dataset.rater_masks is not None:
        arrays["rater_masks"] = dataset.rater_masks
    for table in TABLES:
        for column, values in (getattr(dataset, table) or {}).items():
            arrays[f"{table}.{column}"] = np.asarray(values)
    return arrays


def dataset_from_layout(arrays: dict[str, np.ndarray]) -> LUSDataset:
    """The dataset :func:`dataset_arrays` flattened (ValueError if the arrays do not make a valid one)."""
    tables: dict[str, dict[str, np.ndarray]] = {}
    for key, values in arrays.items():
        table, dot, column = key.partition(".")
        if dot and table in TABLES:
            tables.setdefault(table, {})[column] = values
    return LUSDataset(
        name=str(arrays["name"]), images=arrays["images"], confidence=arrays["confidence"],
        confidence_scale=int(arrays["confidence_scale"]), patient=arrays["patient"], visit=arrays["visit"],
        zone=arrays["zone"], classes=tuple(str(c) for c in arrays["classes"]), true_masks=arrays.get("true_masks"),
        rater_masks=arrays.get("rater_masks"), visits=tables.get("visits"), patients=tables.get("patients"),
        frame_info=tables.get("frame_info", {}),
    )
