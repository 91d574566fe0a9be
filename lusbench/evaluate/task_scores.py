"""The standard scores of downstream tasks, computed for many resamples of the task rows at once.

A task metric that names one of these (``MetricDef.score``) gets patient-level intervals and paired tests
(:mod:`lusbench.evaluate.stats`) from its stored out-of-fold predictions, without the task plugin: the
leaderboard is rebuilt from the store alone. Each score is ``fn(y, pred, weight) -> (B,)``: ``y`` ``(n,)`` the
targets (class indices ``0..C-1`` for classification), ``pred`` ``(n,)`` values or ``(n, C)`` class
probabilities, ``weight`` ``(B, n)`` integer multiplicities of the rows in each of ``B`` resamples; the value is
the plain metric on the rows repeated that often (tested against scikit-learn).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lusbench.evaluate.run_results import TaskMetric

BatchedScore = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _weighted_mean(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weight @ values) / weight.sum(axis=1)


def mae(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return _weighted_mean(np.abs(pred - y), weight)


def rmse(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.sqrt(_weighted_mean((pred - y) ** 2, weight))


def r2(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    sse = weight @ ((pred - y) ** 2)
    mean = _weighted_mean(y, weight)
    sst = weight @ (y**2) - weight.sum(axis=1) * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 1e-12 * np.maximum(1.0, weight @ (y**2)), 1 - sse / sst, np.nan)


def pearson_r(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    my, mp = _weighted_mean(y, weight), _weighted_mean(pred, weight)
    total = weight.sum(axis=1)
    cov = weight @ (y * pred) - total * my * mp
    vy = weight @ (y**2) - total * my**2
    vp = weight @ (pred**2) - total * mp**2
    with np.errstate(invalid="ignore", divide="ignore"):
        # Correlation with a constant prediction is undefined, not 0.
        return np.where((vp > 1e-12 * np.maximum(1.0, weight @ pred**2)) & (vy > 0), cov / np.sqrt(vy * vp), np.nan)


def _binary_auroc(positive: np.ndarray, score: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for the boolean ``positive`` rows, ties counted half (the Mann-Whitney form)."""
    order = np.argsort(score, kind="mergesort")
    s, pos, w = score[order], positive[order], weight[:, order]
    w_pos, w_neg = w * pos, w * ~pos
    # Rows of equal score form one group: negatives strictly below a positive count 1, within its group 1/2.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    neg_in_group = np.add.reduceat(w_neg, starts, axis=1)
    neg_below = np.cumsum(neg_in_group, axis=1) - neg_in_group
    pairs = (w_pos * (neg_below[:, group] + 0.5 * neg_in_group[:, group])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pairs / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def auroc(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Binary: AUROC of class 1's probability; more classes: one-vs-rest macro average over the classes."""
    pred = pred.reshape(len(y), -1)
    if pred.shape[1] <= 2:
        return _binary_auroc(y == pred.shape[1] - 1, pred[:, -1], weight)
    return np.mean([_binary_auroc(y == c, pred[:, c], weight) for c in range(pred.shape[1])], axis=0)


def auprc(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Average precision of class 1's probability (scikit-learn's step-wise definition, no interpolation)."""
    score = pred.reshape(len(y), -1)[:, -1]
    order = np.argsort(-score, kind="mergesort")
    s, pos, w = score[order], (y[order] == 1), weight[:, order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # the last row of each group of equal scores
    tp = np.cumsum(w * pos, axis=1)[:, ends]
    seen = np.cumsum(w, axis=1)[:, ends]
    total_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        recall_step = np.diff(np.concatenate([np.zeros((len(w), 1)), tp], axis=1), axis=1) / total_pos
        return np.where(total_pos[:, 0] > 0, (recall_step * precision).sum(axis=1), np.nan)


def brier(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Brier score of class 1's probability."""
    return _weighted_mean((pred.reshape(len(y), -1)[:, -1] - (y == 1)) ** 2, weight)


def _class_counts(y: np.ndarray, label: np.ndarray, weight: np.ndarray, c: int) -> tuple[np.ndarray, ...]:
    tp = weight @ ((label == c) & (y == c))
    return tp, weight @ (label == c), weight @ (y == c)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Mean over the classes present in the resample of the recall of the most probable class."""
    label = pred.reshape(len(y), -1).argmax(axis=1)
    recalls = []
    for c in range(pred.reshape(len(y), -1).shape[1]):
        tp, _, support = _class_counts(y, label, weight, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(support > 0, tp / support, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def f1(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Binary: F1 of class 1; more classes: macro F1. 0 where undefined (scikit-learn's zero_division=0)."""
    probs = pred.reshape(len(y), -1)
    label = probs.argmax(axis=1)
    classes = [1] if probs.shape[1] <= 2 else list(range(probs.shape[1]))
    scores = []
    for c in classes:
        tp, predicted, support = _class_counts(y, label, weight, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(predicted + support > 0, 2 * tp / (predicted + support), 0.0))
    return np.mean(scores, axis=0)


#: Name -> how the statistics compute it. ``per_fold``: rank and correlation scores are averaged over the
#: task-CV folds (pooling the predictions of different task models would rank them against each other).
STANDARD_SCORES: dict[str, tuple[BatchedScore, bool]] = {
    "mae": (mae, False), "rmse": (rmse, False), "r2": (r2, False), "pearson_r": (pearson_r, True),
    "auroc": (auroc, True), "auprc": (auprc, True), "brier": (brier, False),
    "balanced_accuracy": (balanced_accuracy, False), "f1": (f1, False),
}


def task_metric(task: str, score: str) -> TaskMetric:
    """The :class:`TaskMetric` of standard score ``score`` for the predictions of ``task``; KeyError if unknown."""
    fn, per_fold = STANDARD_SCORES[score]
    return TaskMetric(task=task, fn=fn, per_fold=per_fold, batched=True)
