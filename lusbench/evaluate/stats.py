"""Statistics behind every leaderboard number: means with 95% CIs, paired tests against a reference, ranks.

docs/statistics.md states exactly what each number is, with citations. In short, a strategy's numbers rest on
two samples: the patients, and the models its seeds and folds trained (patient ``p`` at seed ``s`` was
predicted by exactly one model, ``(s, fold)``; the patients are the same at every seed).

- Segmentation metrics: frames -> one value per (seed, patient) cell; mean over the finite cells; interval
  from a bootstrap that resamples, with replacement, the models of every seed and the patients
  (:func:`resample_weights`). ``n`` is the number of patients, ``models`` the number of trained models.
- Task metrics with per-patient predictions: the metric averaged over seeds x CV repeats; the same bootstrap,
  patients drawn within each class for classification, the metric recomputed on every resample.
- Task metrics without them (the older stored form): one value per (seed, CV repeat); Student-t interval.
- Paired comparison: the exchangeable unit is the (seed, fold) model pair. Segmentation: a sign-flip
  permutation test over the pairs' summed patient differences (:func:`model_pair_test`). Task metrics: a
  permutation test that trades the two rows' predictions of whole model pairs (:func:`task_swap_test`).
  Fewer than :data:`MIN_MODEL_PAIRS` model pairs: no p-value, mark ``untestable``. Holm across the rows
  compared on one metric.

Everything is deterministic: resampling and permutations draw from fixed seeds, so the same results give the
same leaderboard byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.special import stdtrit

from lusbench.evaluate.run_results import RunResults, TaskMetric, TaskPredictions

CI_LEVEL = 0.95
ALPHA = 0.05
N_BOOTSTRAP = 2000
# Task resamples recompute the metric once per resample, seed and repeat (a Python call each): fewer of them.
N_TASK_BOOTSTRAP = 1000
N_PERMUTATIONS = 10000
# Up to this many units the sign-flip test enumerates all 2**n sign patterns (exact p-value).
EXACT_PERMUTATION_MAX_N = 16
# The task test recomputes the metrics for every pattern of traded model pairs: exact up to 11 pairs (1024
# patterns, see task_swap_test), else this many random ones.
N_TASK_PERMUTATIONS = 1000
EXACT_TASK_PERMUTATION_MAX_N = 11
# With n model pairs the smallest two-sided exact p is 2 / 2**n: 0.0625 at n = 5, so fewer than 6 pairs can
# never reach p < 0.05, and a test on them could only say "not significant" about something it cannot see.
MIN_MODEL_PAIRS = 6
RANDOM_SEED = 0

UNIT_PATIENT = "patient"
UNIT_REPEAT = "seed_repeat"
KIND_SEGMENTATION = "segmentation"
KIND_TASK = "task"

MARK_BETTER = "better"
MARK_WORSE = "worse"
MARK_NOT_SIGNIFICANT = "ns"
MARK_UNTESTABLE = "untestable"


@dataclass(frozen=True)
class Estimate:
    """A mean with its confidence interval (NaN where undefined), the ``n`` units and the ``models`` behind it."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    models: int = 0


@dataclass(frozen=True)
class Comparison:
    """``delta`` (row - reference) on ``n`` shared units, its two-sided p-value (NaN: not tested) and the
    number of (seed, fold) model pairs the difference rests on."""

    delta: float
    p_value: float
    n: int
    models: int = 0


_EMPTY = Estimate(np.nan, np.nan, np.nan, 0)
_NO_COMPARISON = Comparison(np.nan, np.nan, 0)


def _finite(values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def patient_means(frame_values: np.ndarray, patient_index: np.ndarray, n_patients: int) -> np.ndarray:
    """Mean of the finite frame values of each patient; NaN for a patient with no finite frame.

    ``patient_index`` maps every frame to ``0..n_patients-1`` (``np.unique(..., return_inverse=True)``).
    """
    values = np.asarray(frame_values, dtype=np.float64)
    if values.shape != patient_index.shape:
        raise ValueError(f"per-frame values have shape {values.shape}, expected {patient_index.shape}")
    ok = np.isfinite(values)
    sums = np.bincount(patient_index[ok], weights=values[ok], minlength=n_patients)
    counts = np.bincount(patient_index[ok], minlength=n_patients)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def t_mean_ci(values: np.ndarray | Sequence[float], *, level: float = CI_LEVEL) -> Estimate:
    """Mean of the finite values and its Student-t interval (``mean ± t_{n-1} · sd / sqrt(n)``)."""
    x = _finite(values)
    if len(x) == 0:
        return _EMPTY
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean, np.nan, np.nan, 1)
    # stdtrit is scipy.stats.t.ppf (whose _ppf calls it) without scipy.stats' import, a second of a run's start-up.
    half = float(stdtrit(len(x) - 1, 0.5 + level / 2.0) * x.std(ddof=1) / np.sqrt(len(x)))
    return Estimate(mean, mean - half, mean + half, len(x))


# ------------------------------------------------------------------------------------ resampling


def resample_weights(fold: np.ndarray, strata: np.ndarray | None = None, *, n_boot: int = N_BOOTSTRAP,
                     seed: int = RANDOM_SEED) -> np.ndarray:
    """``(B, S, P)`` bootstrap multiplicities of the (seed, patient) cells, patient ``p`` at seed ``s`` having
    been predicted by the model ``(s, fold[s, p])``.

    Each replicate draws, independently and with replacement, the models of every seed (as many as it has:
    seeds are strata of the model level) and the patients (within each stratum when ``strata`` gives one
    per patient); a cell's multiplicity is its model's draws times its patient's. Models and patients are
    crossed, not nested (every seed predicts every patient, each time with another model), so one patient
    draw serves all seeds, as in Owen's pigeonhole bootstrap for crossed random factors (Owen 2007); within
    a seed, patients are nested in models, the two-stage design of Davison & Hinkley (1997, §3.8) resampled
    at both stages with replacement as in Saravanan et al. (2020). Seeds themselves are not resampled: every
    bit of a seed's training randomness is in its models (each has its own training seed and training
    set), so a seed level would count it twice. A row that trained nothing has one pseudo-model per seed
    (``fold`` all 0): only its patients are resampled. Float64 (the counts are exact) for the matrix products.
    """
    fold = np.asarray(fold)
    n_seeds, n_patients = fold.shape
    rng = np.random.default_rng(seed)
    cell = np.empty((n_boot, n_seeds, n_patients))
    for s in range(n_seeds):
        models, model_of = np.unique(fold[s], return_inverse=True)
        model_w = rng.multinomial(len(models), np.full(len(models), 1.0 / len(models)), size=n_boot)
        cell[:, s, :] = model_w[:, model_of.ravel()]
    patient_w = np.empty((n_boot, n_patients))
    groups = np.zeros(n_patients, dtype=np.int64) if strata is None else np.unique(strata, return_inverse=True)[1].ravel()
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        patient_w[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=n_boot)
    cell *= patient_w[:, None, :]
    return cell


def _percentile_estimate(mean: float, replicates: np.ndarray, n: int, models: int, level: float) -> Estimate:
    """``mean`` with the percentile interval of the finite ``replicates``; no interval from fewer than 2 units."""
    boot = _finite(replicates)
    if n < 2 or len(boot) < 2:
        return Estimate(mean, np.nan, np.nan, n, models)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return Estimate(mean, float(low), float(high), n, models)


def _count_models(fold: np.ndarray | None, ok: np.ndarray | None = None) -> int:
    """Distinct (seed, fold) models among the cells where ``ok`` (None: all); 0 for a row that trained none."""
    if fold is None:
        return 0
    if ok is None:
        return len({(s, f) for s, row in enumerate(fold.tolist()) for f in row})
    seeds = np.broadcast_to(np.arange(fold.shape[0])[:, None], fold.shape)
    return len(set(zip(seeds[ok].tolist(), fold[ok].tolist(), strict=True)))


def hierarchical_estimates(values: np.ndarray, weights: np.ndarray, fold: np.ndarray | None = None, *,
                           level: float = CI_LEVEL) -> list[Estimate]:
    """For each ``(S, P)`` slice of ``values`` ``(M, S, P)``: the mean of its finite (seed, patient) cells and its
    bootstrap interval.

    Every replicate is the weighted mean of the finite cells with the weights of :func:`resample_weights`;
    the interval is the percentile interval. ``n`` counts the patients with a finite cell, ``models`` the
    models of ``fold`` behind them. Many slices at once: one matrix product reads the weights once for all.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    flat_ok = ok.reshape(len(values), -1)
    columns = np.concatenate([np.where(flat_ok, values.reshape(len(values), -1), 0.0), flat_ok], axis=0).T
    sums = weights.reshape(len(weights), -1) @ columns
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = sums[:, : len(values)] / sums[:, len(values):]
    out = []
    for i, cells in enumerate(ok):
        n = int(cells.any(axis=0).sum())
        mean = float(values[i][cells].mean()) if n else np.nan
        out.append(_percentile_estimate(mean, replicates[:, i], n, _count_models(fold, cells), level) if n else _EMPTY)
    return out


# ----------------------------------------------------------------------------------- sign-flip tests


@lru_cache(maxsize=8)
def _sign_patterns(n: int, n_perm: int, seed: int, exact_max: int) -> np.ndarray:
    """``(m, n)`` sign patterns (float64 +-1), the identity first: all ``2**n`` up to ``exact_max`` units, else
    the identity and ``n_perm`` random ones.

    Cached: a leaderboard tests every row and metric on the same number of units, and equal inputs must see
    equal patterns anyway (determinism).
    """
    if n <= exact_max:
        return 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    random = np.random.default_rng(seed).choice(np.array([1.0, -1.0]), size=(n_perm, n))
    return np.vstack([np.ones((1, n)), random])


def _permutation_p(permuted: np.ndarray) -> float:
    """Two-sided p-value of the statistic ``permuted[0]`` (the identity) against all of ``permuted``.

    With every pattern, exact; with the identity and random ones, ``(1 + #{|T*| >= |T|}) / (1 + m)``, which
    is never 0 (Phipson & Smyth 2010).
    """
    # Exact ties with the observed statistic count as "as extreme"; the slack absorbs float rounding.
    threshold = abs(permuted[0]) - 1e-10 * max(float(np.max(np.abs(permuted))), 1e-300)
    return float(np.mean(np.abs(permuted) >= threshold))


def sign_flip_p(x: np.ndarray | Sequence[float], *, n_perm: int = N_PERMUTATIONS, seed: int = RANDOM_SEED) -> float:
    """Two-sided sign-flip permutation p-value of ``sum(x) = 0``, the signs of the ``x`` being exchangeable.

    Exact up to EXACT_PERMUTATION_MAX_N values; beyond, ``n_perm`` random sign patterns.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if len(x) > EXACT_PERMUTATION_MAX_N:
        return _permutation_p(_sign_patterns(len(x), n_perm, seed, EXACT_PERMUTATION_MAX_N) @ x)
    # Every pattern's sum as a sum over the first half's patterns plus one over the second half's: 2**n
    # additions instead of n * 2**n multiplications; both identities come first, so the observed sum does too.
    half = len(x) // 2
    first = _sign_patterns(half, n_perm, seed, EXACT_PERMUTATION_MAX_N) @ x[:half]
    second = _sign_patterns(len(x) - half, n_perm, seed, EXACT_PERMUTATION_MAX_N) @ x[half:]
    return _permutation_p((first[:, None] + second[None, :]).ravel())


def paired_permutation_test(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    *,
    n_perm: int = N_PERMUTATIONS,
    seed: int = RANDOM_SEED,
) -> Comparison:
    """Two-sided sign-flip permutation test of ``mean(a - b) = 0`` on the pairs where both are finite.

    Valid when the pairs are the exchangeable units (each pair's sign may flip on its own under the null).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if len(d) == 0:
        return _NO_COMPARISON
    return Comparison(float(d.mean()), sign_flip_p(d, n_perm=n_perm, seed=seed), len(d))


def model_pair_test(a: np.ndarray, b: np.ndarray, fold: np.ndarray | None, *, min_pairs: int = MIN_MODEL_PAIRS,
                    n_perm: int = N_PERMUTATIONS, seed: int = RANDOM_SEED) -> Comparison:
    """Paired test of two rows' ``(S, P)`` cell values whose exchangeable unit is the (seed, fold) model pair.

    Cell ``(s, p)`` of both rows was predicted by the models ``(s, fold[s, p])`` of each row, trained on the
    same patients with the same seed: under the null that the two procedures are exchangeable, swapping the
    two models of one pair flips the sign of every difference of that pair's patients together, and of
    nothing else. The statistic is the sum over pairs of the pair's summed patient differences (so
    ``delta``, that sum over the number of finite cells, is the mean difference over cells); its sign-flip
    distribution over the pairs gives the p-value. Fewer than ``min_pairs`` pairs (or no ``fold``: no
    trained models): ``delta`` only, p NaN.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    ok = np.isfinite(d)
    if not ok.any():
        return _NO_COMPARISON
    delta, n = float(d[ok].mean()), int(ok.any(axis=0).sum())
    if fold is None:
        return Comparison(delta, np.nan, n, 0)
    pair = (np.arange(d.shape[0])[:, None] * (int(fold.max()) + 1) + fold)[ok]
    _, pair_of = np.unique(pair, return_inverse=True)
    sums = np.bincount(pair_of.ravel(), weights=d[ok])
    if len(sums) < min_pairs:
        return Comparison(delta, np.nan, n, len(sums))
    return Comparison(delta, sign_flip_p(sums, n_perm=n_perm, seed=seed), n, len(sums))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for k, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def significance_mark(delta: float, p_value: float, higher_is_better: bool, *, models: int | None = None,
                      alpha: float = ALPHA) -> str:
    """The mark of a comparison; ``p_value`` is the Holm-adjusted one.

    ``""`` when there was nothing to compare; ``untestable`` when ``models`` (the model pairs behind it, None
    where that does not apply) is below MIN_MODEL_PAIRS; else ``better``/``worse`` when significant at
    ``alpha`` (direction-aware) and ``ns`` when not.
    """
    if not np.isfinite(delta):
        return ""
    if models is not None and models < MIN_MODEL_PAIRS:
        return MARK_UNTESTABLE
    if not np.isfinite(p_value):
        return ""
    if p_value >= alpha or delta == 0:
        return MARK_NOT_SIGNIFICANT
    return MARK_BETTER if (delta > 0) == higher_is_better else MARK_WORSE


def competition_ranks(means: Mapping[str, float], higher_is_better: bool) -> dict[str, int | None]:
    """Standard competition ranks ("1224") of the finite means, best first; None for a missing mean."""
    finite = {k: float(v) for k, v in means.items() if v is not None and np.isfinite(v)}
    sign = -1.0 if higher_is_better else 1.0
    ranks: dict[str, int | None] = {k: None for k in means}
    for key, value in finite.items():
        ranks[key] = 1 + sum(1 for other in finite.values() if sign * other < sign * value)
    return ranks


# ------------------------------------------------------------------------------------ task metrics


@dataclass(frozen=True)
class TaskRows:
    """The task rows shared by every seed of one row: targets, each row's patient and the class strata."""

    y_true: np.ndarray
    patients: np.ndarray  # (P,) sorted patient ids
    patient_of: np.ndarray  # (n,) index into ``patients`` of each task row
    strata: np.ndarray | None  # (P,) class stratum of each patient (classification), else None

    @classmethod
    def of(cls, preds: Sequence[TaskPredictions]) -> TaskRows:
        """The rows of ``preds`` (one per seed); ValueError when the seeds disagree on them."""
        first = preds[0]
        patient, y = np.asarray(first["patient"]), np.asarray(first["y_true"], dtype=np.float64)
        for other in preds[1:]:
            if not (np.array_equal(np.asarray(other["patient"]), patient)
                    and np.array_equal(np.asarray(other["y_true"], dtype=np.float64), y, equal_nan=True)):
                raise ValueError("task predictions of one task must have the same rows (patient, y_true) at every seed")
        patients, patient_of = np.unique(patient, return_inverse=True)
        patient_of = patient_of.ravel()
        strata = None
        if first["kind"] == "classification":
            # A patient's class; patients whose rows hold several classes form one more stratum of their own.
            lowest = np.full(len(patients), np.inf)
            highest = np.full(len(patients), -np.inf)
            np.minimum.at(lowest, patient_of, y)
            np.maximum.at(highest, patient_of, y)
            strata = np.where(lowest == highest, lowest, y.max() + 1.0)
        return cls(y, patients, patient_of, strata)

    def same_as(self, other: TaskRows) -> bool:
        return (np.array_equal(self.patients, other.patients) and np.array_equal(self.patient_of, other.patient_of)
                and np.array_equal(self.y_true, other.y_true, equal_nan=True))


def _evaluate(metric: TaskMetric, y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``(B,)``: the metric on the rows taken with the integer multiplicities of each row of ``weight`` ``(B, n)``."""
    if metric.batched:
        return np.asarray(metric.fn(y, pred, weight), dtype=np.float64).reshape(len(weight))
    index = np.arange(len(y))
    out = np.empty(len(weight))
    for b, w in enumerate(weight.astype(np.int64)):
        take = np.repeat(index, w)
        out[b] = metric.fn(y[take], pred[take])
    return out


def _repeat_values(metric: TaskMetric, y: np.ndarray, pred: np.ndarray, fold: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``(B,)`` values of one repeat's metric on the weighted rows; per task-CV fold where the metric asks for it.

    Per fold as :func:`lusbench.evaluate.tasks.fold_mean` does it, on the weighted rows: the mean over the
    folds whose drawn rows hold two target values or more, of their finite values.
    """
    if not metric.per_fold:
        return _evaluate(metric, y, pred, weight)
    total = np.zeros(len(weight))
    count = np.zeros(len(weight))
    for f in np.unique(fold):
        rows = fold == f
        levels = np.unique(y[rows], return_inverse=True)[1].ravel()
        drawn = weight[:, rows] @ (levels[:, None] == np.arange(levels.max() + 1)[None, :])
        defined = np.flatnonzero((drawn > 0).sum(axis=1) >= 2)
        if len(defined) == 0:
            continue
        value = _evaluate(metric, y[rows], pred[rows], weight[defined][:, rows])
        ok = np.isfinite(value)
        total[defined[ok]] += value[ok]
        count[defined[ok]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _mean_over_seeds_and_repeats(preds: Sequence[Mapping[str, Any]], metric: TaskMetric, y: np.ndarray,
                                 weight_of_seed: Callable[[int], np.ndarray]) -> np.ndarray:
    """``(B,)`` mean over the finite (seed, repeat) values of the metric, seed ``s``'s rows weighted by
    ``weight_of_seed(s)`` ``(B, n)``."""
    num = den = 0.0
    for s, pred in enumerate(preds):
        weight = weight_of_seed(s)
        for values, fold in zip(pred["repeats"], pred["folds"], strict=True):
            value = _repeat_values(metric, y, np.asarray(values, dtype=np.float64), np.asarray(fold), weight)
            ok = np.isfinite(value)
            num = num + np.where(ok, value, 0.0)
            den = den + ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def task_point(preds: Sequence[TaskPredictions], metric: TaskMetric, rows: TaskRows) -> float:
    """A task metric of one row: its mean over the finite (seed, repeat) values."""
    once = np.ones((1, len(rows.y_true)))
    return float(_mean_over_seeds_and_repeats(preds, metric, rows.y_true, lambda s: once)[0])


def task_replicates(preds: Sequence[TaskPredictions], metric: TaskMetric, rows: TaskRows,
                    weights: np.ndarray) -> np.ndarray:
    """``(B,)`` bootstrap replicates of :func:`task_point`.

    In replicate ``b`` the task rows of seed ``s`` are taken with the multiplicity of their patient's cell
    ``weights[b, s]`` (:func:`resample_weights`; a patient's rows go together), and the metric is recomputed
    for every repeat and averaged the same way: the same statistic, on the resampled patients and models.
    """
    return _mean_over_seeds_and_repeats(preds, metric, rows.y_true, lambda s: weights[:, s, rows.patient_of])


def task_swap_test(preds_a: Sequence[TaskPredictions], preds_b: Sequence[TaskPredictions], metric: TaskMetric,
                   rows: TaskRows, fold: np.ndarray, *, n_perm: int = N_TASK_PERMUTATIONS,
                   seed: int = RANDOM_SEED) -> float:
    """Two-sided p-value of a task metric's difference between two rows, the (seed, fold) model pair the unit.

    ``fold[s, p]``: the segmentation fold whose models (one per row) predicted task patient ``p`` at seed
    ``s``. Under the null that the two procedures are exchangeable, the two models of a pair may trade
    places; that trades the two rows' task predictions of the pair's patients (every repeat of that seed).
    The statistic, the difference of the rows' :func:`task_point`, is recomputed for every pattern of traded
    pairs: all of them up to EXACT_TASK_PERMUTATION_MAX_N pairs, else ``n_perm`` random ones. Trading every
    pair only flips the statistic's sign, so the first pair is never traded: half the patterns, the same
    distribution of ``|difference|``. Approximate in one respect: each row's task models were fitted to that
    row's features, and a trade keeps the predictions, where an exact test would refit on traded features.
    """
    pair = np.unique(np.arange(fold.shape[0])[:, None] * (int(fold.max()) + 1) + fold, return_inverse=True)[1]
    pair = pair.reshape(fold.shape)
    n_pairs = int(pair.max()) + 1
    patterns = _sign_patterns(n_pairs - 1, n_perm, seed, EXACT_TASK_PERMUTATION_MAX_N - 1)
    traded = np.hstack([np.zeros((len(patterns), 1), dtype=bool), patterns < 0])
    # Both rows' predictions side by side: a row after a trade takes, for each task row, one of the two.
    y2 = np.concatenate([rows.y_true, rows.y_true])
    both = [{"repeats": [np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])
                         for a, b in zip(pa["repeats"], pb["repeats"], strict=True)],
             "folds": [np.concatenate([np.asarray(fa), np.asarray(fb)]) for fa, fb in zip(pa["folds"], pb["folds"],
                                                                                          strict=True)]}
            for pa, pb in zip(preds_a, preds_b, strict=True)]

    def weight(s: int, side_a: bool) -> np.ndarray:
        take_a = ~traded[:, pair[s, rows.patient_of]]
        take_a = take_a if side_a else ~take_a
        return np.concatenate([take_a, ~take_a], axis=1).astype(np.float64)

    permuted = (_mean_over_seeds_and_repeats(both, metric, y2, lambda s: weight(s, True))
                - _mean_over_seeds_and_repeats(both, metric, y2, lambda s: weight(s, False)))
    if not np.isfinite(permuted[0]):
        return np.nan
    # A pattern whose metric is undefined (a resampled class vanished) counts as extreme: the safe side.
    return _permutation_p(np.where(np.isfinite(permuted), permuted, np.inf))


# ---------------------------------------------------------------------------------------- a whole run


class RunStatistics:
    """Per-(row, metric) units of a :class:`RunResults`, and the estimates and comparisons built on them.

    A metric's unit is ``patient`` when any row reports it per frame (kind ``segmentation``), or when it is
    a task metric with a :class:`TaskMetric` and per-patient predictions (kind ``task``); else
    ``seed_repeat`` when any row reports it as a task metric (kind ``task``, the per-repeat values); else
    None. Resampling weights and cell values are cached: every row and comparison of a leaderboard reuses
    them.
    """

    def __init__(self, results: RunResults, *, n_boot: int = N_BOOTSTRAP, n_task_boot: int = N_TASK_BOOTSTRAP,
                 n_perm: int = N_PERMUTATIONS, seed: int = RANDOM_SEED) -> None:
        self.results = results
        self.n_boot, self.n_task_boot, self.n_perm, self.seed = n_boot, n_task_boot, n_perm, seed
        self.patients, self.patient_index = np.unique(np.asarray(results.frame_patient), return_inverse=True)
        self.patient_index = self.patient_index.ravel()
        seg_names = {m for values in results.seg.values() for m in values}
        task_names = {m for values in results.tasks.values() for m in values}
        predicted = {t for preds in results.task_predictions.values() for t in preds}
        self.task_metric = {m: tm for m, tm in results.task_metrics.items() if tm.task in predicted}
        self.unit: dict[str, str | None] = {}
        self.kind: dict[str, str | None] = {}
        for d in results.metric_defs:
            if d.name in seg_names:
                self.unit[d.name], self.kind[d.name] = UNIT_PATIENT, KIND_SEGMENTATION
            elif d.name in self.task_metric:
                self.unit[d.name], self.kind[d.name] = UNIT_PATIENT, KIND_TASK
            elif d.name in task_names:
                self.unit[d.name], self.kind[d.name] = UNIT_REPEAT, KIND_TASK
            else:
                self.unit[d.name], self.kind[d.name] = None, None
        self._weights: dict[bytes, np.ndarray] = {}
        self._cells: dict[tuple[str, str, tuple[int, ...]], np.ndarray] = {}
        self._folds: dict[tuple[str, tuple[int, ...]], np.ndarray | None] = {}
        self._seg_estimates: dict[tuple[str, str], Estimate] = {}

    # ------------------------------------------------------------------------------------ the data

    def seeds(self, row: str, metric: str) -> list[int]:
        """The seeds for which ``row`` reports ``metric``."""
        r = self.results
        if self.kind.get(metric) == KIND_SEGMENTATION:
            return [s for s in r.seeds if metric in r.seg.get((row, s), {})]
        if metric in self.task_metric:
            task = self.task_metric[metric].task
            return [s for s in r.seeds if task in r.task_predictions.get((row, s), {})]
        return [s for s in r.seeds if metric in r.tasks.get((row, s), {})]

    def cell_values(self, row: str, metric: str, seeds: Sequence[int]) -> np.ndarray:
        """``(S, P)``: the mean of the finite frames of each patient at each seed (NaN: none)."""
        key = (row, metric, tuple(seeds))
        if key not in self._cells:
            self._cells[key] = np.stack([
                patient_means(self.results.seg[(row, s)][metric], self.patient_index, len(self.patients)) for s in seeds
            ]) if seeds else np.full((0, len(self.patients)), np.nan)
        return self._cells[key]

    def patient_folds(self, row: str, seeds: Sequence[int]) -> np.ndarray | None:
        """``(S, P)`` fold of the model that predicted each patient at each seed; None for a row that trained none.

        ValueError when a patient's frames were predicted by different folds of one seed, or some frames by none.
        """
        key = (row, tuple(seeds))
        if key not in self._folds:
            frame_folds = [self.results.frame_fold.get((row, s)) for s in seeds]
            if not seeds or all(f is None for f in frame_folds):
                self._folds[key] = None
            else:
                table = np.empty((len(seeds), len(self.patients)), dtype=np.int64)
                for i, (s, frame_fold) in enumerate(zip(seeds, frame_folds, strict=True)):
                    if frame_fold is None:
                        raise ValueError(f"{row} has frame folds at some seeds but not at seed {s}")
                    frame_fold = np.asarray(frame_fold, dtype=np.int64)
                    table[i, self.patient_index] = frame_fold
                    if frame_fold.min() < 0 or not np.array_equal(table[i, self.patient_index], frame_fold):
                        raise ValueError(f"{row} seed {s}: every frame of a patient must be predicted by one fold's model")
                self._folds[key] = table
        return self._folds[key]

    def _shared_folds(self, row: str, reference: str, seeds: Sequence[int]) -> np.ndarray | None:
        """The model table both rows share (their models pair); None when either trained none."""
        a, b = self.patient_folds(row, seeds), self.patient_folds(reference, seeds)
        if a is None or b is None:
            return None
        if not np.array_equal(a, b):
            raise ValueError(f"{row} and {reference} were trained on different folds: their models do not pair")
        return a

    def weights(self, fold: np.ndarray, strata: np.ndarray | None, n_boot: int) -> np.ndarray:
        """The (cached) :func:`resample_weights` of a design: equal designs get equal draws."""
        key = b"".join([np.asarray(fold.shape).tobytes(), fold.tobytes(), b"|" if strata is None else strata.tobytes(),
                        str(n_boot).encode()])
        if key not in self._weights:
            self._weights[key] = resample_weights(fold, strata, n_boot=n_boot, seed=self.seed)
        return self._weights[key]

    def _task_inputs(self, row: str, metric: str, seeds: Sequence[int]
                     ) -> tuple[list[TaskPredictions], TaskRows, np.ndarray | None]:
        """One row's predictions per seed, the task rows, and the ``(S, P_task)`` model table of its patients."""
        task = self.task_metric[metric].task
        preds = [self.results.task_predictions[(row, s)][task] for s in seeds]
        rows = TaskRows.of(preds)
        fold = self.patient_folds(row, seeds)
        if fold is None:
            return preds, rows, None
        if not np.isin(rows.patients, self.patients).all():
            raise ValueError(f"task {task} has patients without frames: their models are unknown")
        return preds, rows, fold[:, np.searchsorted(self.patients, rows.patients)]

    def _task_replicates(self, row: str, metric: str, seeds: Sequence[int], rows: TaskRows,
                         fold: np.ndarray | None, preds: list[TaskPredictions]) -> np.ndarray:
        design = fold if fold is not None else np.zeros((len(seeds), len(rows.patients)), dtype=np.int64)
        return task_replicates(preds, self.task_metric[metric], rows, self.weights(design, rows.strata, self.n_task_boot))

    def _estimate_segmentation(self, row: str, seeds: list[int]) -> None:
        """The estimates of every segmentation metric ``row`` reports at ``seeds``, in one pass over the weights."""
        metrics = [m for m, kind in self.kind.items() if kind == KIND_SEGMENTATION and self.seeds(row, m) == seeds]
        fold = self.patient_folds(row, seeds)
        design = fold if fold is not None else np.zeros((len(seeds), len(self.patients)), dtype=np.int64)
        values = np.stack([self.cell_values(row, m, seeds) for m in metrics])
        for m, est in zip(metrics, hierarchical_estimates(values, self.weights(design, None, self.n_boot), fold),
                          strict=True):
            self._seg_estimates[(row, m)] = est

    # ------------------------------------------------------------------------------ the numbers

    def estimate(self, row: str, metric: str) -> tuple[Estimate, int]:
        """The row's estimate for ``metric`` and the number of seeds it pools."""
        seeds = self.seeds(row, metric)
        if not seeds:
            return _EMPTY, 0
        unit, kind = self.unit.get(metric), self.kind.get(metric)
        if kind == KIND_SEGMENTATION:
            if (row, metric) not in self._seg_estimates:
                self._estimate_segmentation(row, seeds)
            return self._seg_estimates[(row, metric)], len(seeds)
        if unit == UNIT_PATIENT:
            preds, rows, fold = self._task_inputs(row, metric, seeds)
            point = task_point(preds, self.task_metric[metric], rows)
            if not np.isfinite(point):
                return _EMPTY, len(seeds)
            replicates = self._task_replicates(row, metric, seeds, rows, fold, preds)
            return _percentile_estimate(point, replicates, len(rows.patients), _count_models(fold), CI_LEVEL), len(seeds)
        values = [v for s in seeds for v in self.results.tasks[(row, s)][metric]]
        est = t_mean_ci([np.nan if v is None else v for v in values])
        models = _count_models(self.patient_folds(row, seeds))
        return Estimate(est.mean, est.ci_low, est.ci_high, est.n, models), len(seeds)

    def compare(self, row: str, reference: str, metric: str) -> Comparison:
        """Paired comparison of ``row`` with ``reference`` on the seeds both report (see the module docstring)."""
        ref_seeds = set(self.seeds(reference, metric))
        seeds = [s for s in self.seeds(row, metric) if s in ref_seeds]
        if not seeds:
            return _NO_COMPARISON
        fold = self._shared_folds(row, reference, seeds)
        if self.kind.get(metric) == KIND_SEGMENTATION:
            return model_pair_test(self.cell_values(row, metric, seeds), self.cell_values(reference, metric, seeds),
                                   fold, n_perm=self.n_perm, seed=self.seed)
        if self.unit.get(metric) == UNIT_PATIENT:
            preds_a, rows_a, fold_a = self._task_inputs(row, metric, seeds)
            preds_b, rows_b, _ = self._task_inputs(reference, metric, seeds)
            if not rows_a.same_as(rows_b):
                raise ValueError(f"{row} and {reference} predict different rows of task {self.task_metric[metric].task}")
            task_metric = self.task_metric[metric]
            delta = task_point(preds_a, task_metric, rows_a) - task_point(preds_b, task_metric, rows_b)
            if not np.isfinite(delta):
                return _NO_COMPARISON
            models = _count_models(fold_a)  # the models behind the task's patients
            p = np.nan
            if fold_a is not None and models >= MIN_MODEL_PAIRS:
                p = task_swap_test(preds_a, preds_b, task_metric, rows_a, fold_a, seed=self.seed)
            return Comparison(float(delta), p, len(rows_a.patients), models)
        a = {(s, r): v for s in seeds for r, v in enumerate(self.results.tasks[(row, s)][metric])}
        b = {(s, r): v for s in seeds for r, v in enumerate(self.results.tasks[(reference, s)][metric])}
        keys = sorted(set(a) & set(b))
        models = _count_models(fold)
        result = paired_permutation_test([np.nan if a[k] is None else a[k] for k in keys],
                                         [np.nan if b[k] is None else b[k] for k in keys], n_perm=self.n_perm, seed=self.seed)
        return Comparison(result.delta, result.p_value if models >= MIN_MODEL_PAIRS else np.nan, result.n, models)
