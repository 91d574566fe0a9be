"""Downstream clinical tasks: what a ``register_downstream_tasks`` factory returns (docs/tasks.md).

A task turns the features of one set of segmentations (:class:`lusbench.evaluate.features.FeatureSet`) into metric
values, one per repeat of a repeated patient-grouped cross-validation. Splits depend only on the dataset and
the seed, never on the features, so repeat ``r`` of two strategies uses the same splits and their values pair.

:class:`DownstreamTask` is the contract; :class:`SupervisedTask` implements it for the common case of one
scikit-learn estimator fitted to a clinical column of the dataset, and :func:`grouped_splits` /
:func:`oof_predictions` are the building blocks for tasks that need something else.

Cheap to import (numpy only): scikit-learn is imported inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset
    from lusbench.evaluate.features import FeatureSet
    from lusbench.evaluate.metricdefs import MetricDef
    from lusbench.evaluate.run_results import TaskPredictions

Splits = list[list[tuple[np.ndarray, np.ndarray]]]


class DownstreamTask:
    """Base class of every downstream task.

    ``name`` is the canonical spec (``"sf-ratio"``, ``"sf-ratio:model=gbm"``); ``prefix`` scopes the metric
    names (``sf_ratio`` -> ``sf_ratio.mae``). ``repeats`` x ``folds`` is the cross-validation protocol.
    """

    name: str = "task"
    prefix: str = "task"
    repeats: int = 5
    folds: int = 5

    def metric_defs(self) -> list[MetricDef]:
        """The task's metrics with full names (``<prefix>.<metric>``), direction and description."""
        raise NotImplementedError(f"{type(self).__name__} must implement metric_defs()")

    def skip_reason(self, dataset: LUSDataset) -> str | None:
        """One line saying why the task cannot run on ``dataset`` (e.g. a missing clinical column), or None."""
        return None

    def evaluate(self, features: FeatureSet, dataset: LUSDataset, seed: int) -> dict[str, list[float]]:
        """Metric name -> one value per repeat; the same (dataset, seed) gives the same splits whatever the features."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def evaluate_with_predictions(self, features: FeatureSet, dataset: LUSDataset,
                                  seed: int) -> tuple[dict[str, list[float]], TaskPredictions | None]:
        """:meth:`evaluate` and the out-of-fold predictions behind it (:class:`TaskPredictions`), or None.

        With predictions stored, the leaderboard's intervals and paired tests of the metrics that name a standard
        ``score`` resample patients. The default returns none: a task that only implements :meth:`evaluate`
        keeps working, with per-repeat statistics."""
        return self.evaluate(features, dataset, seed), None

    def nan_result(self) -> dict[str, list[float]]:
        """Every metric NaN in every repeat: the explicit answer when the data cannot support the task."""
        return {m.name: [float("nan")] * self.repeats for m in self.metric_defs()}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def derived_seed(*parts: int) -> int:
    """A 32-bit seed determined by ``parts`` (e.g. seed, repeat, fold); parts must be non-negative."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def effective_folds(groups: np.ndarray, folds: int, labels: np.ndarray | None = None) -> int:
    """Folds actually used: at most one per patient and, for classification, per patient of the rarest class.

    Fewer than 2 means the data cannot be cross-validated (too few patients, or a single class).
    """
    k = min(folds, len(np.unique(groups)))
    if labels is not None:
        classes = np.unique(labels)
        if len(classes) < 2:
            return 0
        k = min(k, *(len(np.unique(groups[labels == c])) for c in classes))
    return k


def grouped_splits(groups: np.ndarray, *, folds: int, repeats: int, seed: int, labels: np.ndarray | None = None) -> Splits:
    """Repeated patient-grouped K-fold splits of the rows: ``splits[r][f] = (train_rows, test_rows)``.

    No group (patient) is ever on both sides of a split. With ``labels`` the folds are stratified
    (scikit-learn's StratifiedGroupKFold); otherwise patients are dealt into folds at random
    (:func:`lusbench.data.folds.patient_folds`). Repeat ``r`` is shuffled with a seed derived from ``(seed, r)``.
    ``folds`` is reduced by :func:`effective_folds`; ValueError when that leaves fewer than 2.
    """
    from lusbench.data.folds import patient_folds

    k = effective_folds(groups, folds, labels)
    if k < 2:
        raise ValueError(f"cannot cross-validate {len(np.unique(groups))} patient(s) into 2 or more folds")
    rows = np.arange(len(groups))
    out: Splits = []
    for r in range(repeats):
        rs = derived_seed(seed, r)
        if labels is None:
            tests = patient_folds(groups, k, rs)
        else:
            from sklearn.model_selection import StratifiedGroupKFold

            cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=rs)
            tests = [np.sort(test) for _, test in cv.split(rows, labels, groups=groups)]
        out.append([(np.setdiff1d(rows, test), test) for test in tests])
    return out


def oof_predictions(make_estimator: Callable[[int], Any], x: np.ndarray, y: np.ndarray, splits: Splits, *, seed: int,
                    classes: np.ndarray | None = None) -> list[np.ndarray]:
    """Out-of-fold predictions of every row, one array per repeat.

    ``make_estimator(random_state)`` returns a fresh unfitted scikit-learn estimator; ``random_state`` is derived
    from ``(seed, repeat, fold)``. Regression (``classes`` None): ``(n,)`` predicted values. Classification:
    ``(n, len(classes))`` probabilities in ``classes`` order; a training side that holds a single class cannot
    be fitted, and its test rows get probability 1 for that class.
    """
    from threadpoolctl import threadpool_limits

    out = []
    # Models this small gain nothing from BLAS threads, and on a busy machine threads waiting for each
    # other make the fits several times slower.
    with threadpool_limits(limits=1):
        for r, repeat in enumerate(splits):
            pred = np.full(len(y) if classes is None else (len(y), len(classes)), np.nan)
            for f, (train, test) in enumerate(repeat):
                if classes is not None and len(seen := np.unique(y[train])) < 2:
                    pred[test] = (classes == seen[0]).astype(float)
                    continue
                model = make_estimator(derived_seed(seed, r, f)).fit(x[train], y[train])
                if classes is None:
                    pred[test] = model.predict(x[test])
                else:
                    proba = np.zeros((len(test), len(classes)))
                    proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(x[test])
                    pred[test] = proba
            out.append(pred)
    return out


def fold_mean(metric: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, pred: np.ndarray, fold: np.ndarray) -> float:
    """Mean over folds of ``metric(y, pred)`` on each fold's rows; NaN when no fold defines it.

    Rank and correlation metrics (AUROC, average precision, Pearson r) must be computed within one model's
    predictions: pooling the folds' predictions ranks rows of different models against each other, and each
    fold's model leans towards its training prevalence or mean, which is off in the direction opposite to its
    test rows; that drags a pooled AUROC well below 0.5 at chance with few positives (Forman & Scholz 2010,
    "Apples-to-apples in cross-validation studies"). A fold whose ``y`` holds a single value (one class, a
    constant target) does not define such a metric and is left out, as is a NaN value.
    """
    values = [metric(y[fold == f], pred[fold == f]) for f in np.unique(fold) if len(np.unique(y[fold == f])) > 1]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


class SupervisedTask(DownstreamTask):
    """A task that predicts one clinical column from the features with a scikit-learn estimator.

    Subclasses set ``table`` (``"visits"``: one row per visit, from the visit features; ``"patients"``: one row
    per patient, from the patient features whose prefix is in ``patient_prefixes``), ``column``,
    ``classification``, and implement :meth:`make_estimator` and :meth:`score`; :meth:`targets` (to derive the
    target from the column) and :meth:`design` (to choose the features) may be overridden. Rows are the table's rows with a
    finite value in ``column``; every row is predicted out of fold in every repeat, and :meth:`score` sees the
    repeat's out-of-fold predictions of all rows with the fold of each row.
    """

    table: str = "visits"
    column: str = ""
    classification: bool = False
    patient_prefixes: tuple[str, ...] = ("first", "last", "change")
    #: Fewest patients (in each class, for classification) the task runs on. Fewer are too few to learn from
    #: or to score (an AUROC over three positives is noise), so the task is skipped. At least 2 (two folds).
    min_patients: int = 5

    def make_estimator(self, random_state: int) -> Any:
        """A fresh unfitted scikit-learn estimator (a Pipeline, usually; inputs may contain NaN)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_estimator()")

    def score(self, y: np.ndarray, pred: np.ndarray, fold: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
        """Full metric name -> value for one repeat: out-of-fold ``pred`` (values, or probabilities per class in
        ``classes`` order) of every row, and ``fold``, the fold that predicted each row (see :func:`fold_mean`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def targets(self, dataset: LUSDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(y, patient, visit)`` of the rows with a known target; ``visit`` is None for the patients table."""
        rows = getattr(dataset, self.table)
        y = np.asarray(rows[self.column], dtype=np.float64)
        keep = np.isfinite(y)
        visit = np.asarray(rows["visit"])[keep] if self.table == "visits" else None
        return y[keep], np.asarray(rows["patient"])[keep], visit

    def design(self, features: FeatureSet, patient: np.ndarray, visit: np.ndarray | None) -> np.ndarray:
        """Feature matrix of the rows: visit features (visits table) or the ``patient_prefixes`` patient features."""
        if visit is not None:
            return features.visit_rows(patient, visit)
        return features.patient_rows(patient, self.patient_prefixes)

    def skip_reason(self, dataset: LUSDataset) -> str | None:
        if not dataset.has_column(self.table, self.column):
            return f"dataset has no {self.table}.{self.column}"
        y, patient, _ = self.targets(dataset)
        where = f"{self.table}.{self.column}"
        if not self.classification:
            n = len(np.unique(patient))
            return f"{where} is known for {n} patients, fewer than {self.min_patients}" if n < self.min_patients else None
        counts = {c: len(np.unique(patient[y == c])) for c in np.unique(y)}
        if len(counts) < 2:
            return f"{where} has a single class"
        rare = min(counts, key=counts.__getitem__)
        if counts[rare] < self.min_patients:
            return f"{where} has {counts[rare]} patients in class {rare:g}, fewer than {self.min_patients}"
        return None

    def splits(self, dataset: LUSDataset, seed: int) -> Splits:
        """The cross-validation splits of :meth:`targets`' rows: a function of the dataset and the seed only."""
        y, patient, _ = self.targets(dataset)
        return grouped_splits(patient, folds=self.folds, repeats=self.repeats, seed=seed,
                              labels=y if self.classification else None)

    def evaluate(self, features: FeatureSet, dataset: LUSDataset, seed: int) -> dict[str, list[float]]:
        return self.evaluate_with_predictions(features, dataset, seed)[0]

    def evaluate_with_predictions(self, features: FeatureSet, dataset: LUSDataset,
                                  seed: int) -> tuple[dict[str, list[float]], TaskPredictions | None]:
        if self.skip_reason(dataset) is not None:
            return self.nan_result(), None
        y, patient, visit = self.targets(dataset)
        splits = self.splits(dataset, seed)
        x = self.design(features, patient, visit)
        classes = np.unique(y) if self.classification else None
        result: dict[str, list[float]] = {m.name: [] for m in self.metric_defs()}
        repeats, folds = [], []
        for repeat, pred in zip(splits, oof_predictions(self.make_estimator, x, y, splits, seed=seed, classes=classes),
                                strict=True):
            fold = np.empty(len(y), dtype=np.int64)
            for f, (_, test) in enumerate(repeat):
                fold[test] = f
            for name, value in self.score(y, pred, fold, classes).items():
                result[name].append(float(value))
            repeats.append(pred.tolist())
            folds.append(fold.tolist())
        # Classification targets are stored as class indices, the columns of the probabilities.
        target = np.searchsorted(classes, y) if classes is not None else y
        predictions: TaskPredictions = {
            "patient": patient.tolist(), "y_true": target.astype(float).tolist(),
            "kind": "classification" if self.classification else "regression", "repeats": repeats, "folds": folds,
        }
        return result, predictions
