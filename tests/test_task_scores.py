"""The batched task scores equal scikit-learn's metrics on the rows repeated as often as the weights say."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lusbench.evaluate import task_scores as ts

RNG = np.random.default_rng(3)
N = 40


def _repeat(weight_row: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(N), weight_row.astype(int))


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    w = RNG.multinomial(N, np.full(N, 1 / N), size=6).astype(float)
    w[0] = 1.0  # the plain, unresampled rows
    return w


def regression():
    y = RNG.normal(250, 60, N)
    return y, y + RNG.normal(0, 30, N)


def binary():
    y = (RNG.random(N) < 0.4).astype(float)
    p1 = np.clip(0.3 + 0.3 * y + RNG.normal(0, 0.2, N), 0, 1).round(1)  # rounded: ties on purpose
    return y, np.stack([1 - p1, p1], axis=1)


@pytest.mark.parametrize(("name", "reference"), [
    ("mae", skm.mean_absolute_error),
    ("rmse", lambda y, p: np.sqrt(skm.mean_squared_error(y, p))),
    ("r2", skm.r2_score),
    ("pearson_r", lambda y, p: np.corrcoef(y, p)[0, 1]),
])
def test_regression_scores(weights, name, reference):
    y, pred = regression()
    got = ts.STANDARD_SCORES[name][0](y, pred, weights)
    want = [reference(y[_repeat(w)], pred[_repeat(w)]) for w in weights]
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize(("name", "reference"), [
    ("auroc", lambda y, p: skm.roc_auc_score(y, p[:, 1])),
    ("auprc", lambda y, p: skm.average_precision_score(y, p[:, 1])),
    ("brier", lambda y, p: skm.brier_score_loss(y, p[:, 1])),
    ("balanced_accuracy", lambda y, p: skm.balanced_accuracy_score(y, p.argmax(1))),
    ("f1", lambda y, p: skm.f1_score(y, p.argmax(1), zero_division=0.0)),
])
def test_binary_scores(weights, name, reference):
    y, pred = binary()
    got = ts.STANDARD_SCORES[name][0](y, pred, weights)
    want = [reference(y[_repeat(w)], pred[_repeat(w)]) for w in weights]
    assert got == pytest.approx(want, rel=1e-9)


def test_multiclass_auroc_and_f1_are_macro_averages(weights):
    y = RNG.integers(0, 3, N).astype(float)
    logits = RNG.normal(0, 1, (N, 3)) + np.eye(3)[y.astype(int)]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for w in weights[:3]:
        take = _repeat(w)
        assert ts.auroc(y, probs, w[None])[0] == pytest.approx(
            skm.roc_auc_score(y[take], probs[take], multi_class="ovr", labels=[0, 1, 2]))
        assert ts.f1(y, probs, w[None])[0] == pytest.approx(skm.f1_score(y[take], probs[take].argmax(1), average="macro"))


def test_undefined_scores_are_nan_not_errors():
    y = np.zeros(5)
    pred = np.stack([np.ones(5) * 0.6, np.ones(5) * 0.4], axis=1)
    w = np.ones((1, 5))
    assert np.isnan(ts.auroc(y, pred, w)[0]) and np.isnan(ts.auprc(y, pred, w)[0])
    assert np.isnan(ts.pearson_r(np.arange(5.0), np.ones(5), w)[0]) and np.isnan(ts.r2(np.ones(5), np.arange(5.0), w)[0])
