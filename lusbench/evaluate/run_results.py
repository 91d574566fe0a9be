"""What a finished run hands to the leaderboard: per-frame segmentation metrics and task metrics.

The runner assembles :class:`RunResults` from the results store; statistics, the leaderboard JSON, the
terminal table and the HTML report are all computed from it, so they never need to retrain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lusbench.evaluate.metricdefs import MetricDef

# Row names of the reference rows (features of the expert labels / of the true masks) (docs/architecture.md).
REFERENCE_EXPERT = "reference:expert-labels"
REFERENCE_TRUE = "reference:true-masks"


@dataclass
class RunResults:
    """Everything measured by one run, keyed by row (strategy spec or reference name) and seed.

    - ``frame_patient``: ``(N,)`` patient id of every frame (the bootstrap unit for segmentation metrics).
    - ``seg[(row, seed)][metric]``: ``(N,)`` float64 per-frame out-of-fold value, NaN where undefined
      (e.g. Dice of a class absent from both prediction and label).
    - ``tasks[(row, seed)][metric]``: list of floats, one per repeat of the task's patient-grouped CV;
      repeat ``r`` uses the same splits in every row, so values pair across rows.
    - ``calibration[(row, seed)]``: reliability-diagram bins against the eval-threshold labels:
      ``{"bin_edges": [...], "count": [...], "mean_prob": [...], "frac_positive": [...]}``.
    - ``rows``: row names in display order; ``references``: the subset that are reference rows.
    - ``reference_strategy``: the strategy every other row is compared with (paired, same seeds/folds).
    """

    config: dict[str, Any]
    environment: dict[str, Any]
    metric_defs: list[MetricDef]
    frame_patient: np.ndarray
    rows: list[str]
    seeds: list[int]
    references: set[str] = field(default_factory=set)
    reference_strategy: str | None = "threshold:0.5"
    seg: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    tasks: dict[tuple[str, int], dict[str, list[float]]] = field(default_factory=dict)
    calibration: dict[tuple[str, int], dict[str, list[float]]] = field(default_factory=dict)


def pool_calibration(parts: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Pool reliability-diagram bins (of folds, or of seeds): counts add, bin means are count-weighted.

    Bins empty in every part get NaN means. Raises ValueError when the parts' bin edges differ.
    """
    edges = np.asarray(parts[0]["bin_edges"], dtype=np.float64)
    if any(not np.array_equal(np.asarray(p["bin_edges"], dtype=np.float64), edges) for p in parts):
        raise ValueError("calibration bins with different edges cannot be pooled")
    count = np.stack([np.asarray(p["count"], dtype=np.float64) for p in parts])
    total = count.sum(axis=0)
    pooled: dict[str, list[float]] = {"bin_edges": edges.tolist(), "count": total.tolist()}
    for key in ("mean_prob", "frac_positive"):
        values = np.stack([np.asarray(p[key], dtype=np.float64) for p in parts])
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled[key] = np.where(total > 0, np.nansum(values * count, axis=0) / total, np.nan).tolist()
    return pooled
