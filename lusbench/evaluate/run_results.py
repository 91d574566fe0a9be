"""What a finished run hands to the leaderboard: per-frame segmentation metrics and task metrics.

The runner assembles :class:`RunResults` from the results store; statistics, the leaderboard JSON, the
terminal table and the HTML report are all computed from it, so they never need to retrain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import numpy as np

from lusbench.evaluate.metricdefs import MetricDef

# Names of the label rows: the expert labels and (synthetic data) the true masks scored and fed to the tasks as
# if they were predictions, the floor and ceiling of the strategies (docs/architecture.md). "labels:", not
# "reference:": the reference is the strategy given by --reference.
LABELS_EXPERT = "labels:expert"
LABELS_TRUE = "labels:true"


class TaskPredictions(TypedDict):
    """The out-of-fold predictions of one task for one (row, seed): what patient-level task statistics resample.

    One entry per task row (a patient, or a visit for visit-level tasks: a patient may own several rows).
    The rows and their order are the task's, so they are the same in every row and seed of a run.

    - ``patient``: ``(n,)`` patient id of each task row, the ids of :attr:`RunResults.frame_patient`.
    - ``y_true``: ``(n,)`` the target of each task row.
    - ``kind``: ``"regression"`` or ``"classification"`` (binary or multi-class; classification resamples
      patients within each class).
    - ``repeats``: one prediction per repeat of the task's cross-validation, ``R`` in all: ``(n,)`` predicted
      values, or ``(n, C)`` class probabilities in the order the task's metric expects.
    - ``folds``: one ``(n,)`` int array per repeat: the task-CV fold whose model predicted each row (metrics
      that must be computed within one model, such as AUROC, are averaged over these folds).

    Lists (as stored in JSON) are accepted wherever an array is.
    """

    patient: Sequence[Any]
    y_true: Sequence[float]
    kind: Literal["regression", "classification"]
    repeats: Sequence[Sequence[Any]]
    folds: Sequence[Sequence[int]]


@dataclass(frozen=True)
class TaskMetric:
    """How one task metric is computed from :class:`TaskPredictions` (filled from the task plugin).

    - ``task``: the key of the predictions in ``RunResults.task_predictions[(row, seed)]``.
    - ``fn``: ``fn(y_true, y_pred) -> float`` on any multiset of the task rows (``y_pred`` ``(m,)`` or
      ``(m, C)``); NaN where undefined. It is called once per resample, seed and repeat (and fold).
    - ``batched``: True when ``fn`` is instead ``fn(y_true, y_pred, weight) -> (B,)`` with ``weight`` ``(B, n)``
      integer multiplicities of the ``n`` rows, equal to the plain metric on the rows repeated that often:
      one call per seed and repeat (and fold) for all resamples, about a hundred times faster.
    - ``per_fold``: True for metrics that must not pool the predictions of different task-CV models (rank and
      correlation metrics): the value is then the mean over the repeat's folds
      (:func:`lusbench.evaluate.tasks.fold_mean`).
    """

    task: str
    fn: Callable[..., Any]
    per_fold: bool = False
    batched: bool = False


@dataclass
class RunResults:
    """Everything measured by one run, keyed by row (strategy spec or label row name) and seed.

    - ``frame_patient``: ``(N,)`` patient id of every frame (the bootstrap unit for segmentation metrics).
    - ``seg[(row, seed)][metric]``: ``(N,)`` float64 per-frame out-of-fold value, NaN where undefined
      (e.g. Dice of a class absent from both prediction and label).
    - ``frame_fold[(row, seed)]``: ``(N,)`` int64 fold of the model that predicted each frame out of fold, so
      ``(seed, frame_fold[(row, seed)][i])`` names the trained model behind frame ``i``. The folds of a seed
      are the same for every strategy (that is what pairs two strategies' models). Absent for rows that
      train nothing (label rows).
    - ``tasks[(row, seed)][metric]``: list of floats, one per repeat of the task's patient-grouped CV;
      repeat ``r`` uses the same splits in every row, so values pair across rows.
    - ``task_predictions[(row, seed)][task]``: the task's per-row out-of-fold predictions
      (:class:`TaskPredictions`). A task metric named in ``task_metrics`` is computed from them, with
      patients as the unit; one that is not keeps the per-repeat values of ``tasks``.
    - ``task_metrics[metric]``: how to compute the task metric ``metric`` from the predictions
      (:class:`TaskMetric`).
    - ``calibration[(row, seed)]``: reliability-diagram bins against the eval-threshold labels:
      ``{"bin_edges": [...], "count": [...], "mean_prob": [...], "frac_positive": [...]}``.
    - ``rows``: row names in display order; ``references``: the subset that are label rows.
    - ``reference_strategy``: the strategy every other row is compared with (paired, same seeds/folds).
    - ``primary_metric``: the metric the run is judged by, one no strategy trains on.
    - ``sweeps[row]``: ``{"family", "parameter", "value"}`` for strategies that declare a sweep parameter.
    - ``trained_folds[(row, seed, fold)]``: how each fold trained: ``best_epoch`` (0-based, the kept weights),
      ``epochs_run``, ``stop_reason`` and ``degenerate`` (classes the model learned nothing for).
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
    frame_fold: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    tasks: dict[tuple[str, int], dict[str, list[float]]] = field(default_factory=dict)
    task_predictions: dict[tuple[str, int], dict[str, TaskPredictions]] = field(default_factory=dict)
    task_metrics: dict[str, TaskMetric] = field(default_factory=dict)
    calibration: dict[tuple[str, int], dict[str, list[float]]] = field(default_factory=dict)
    primary_metric: str | None = None
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    trained_folds: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)


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
