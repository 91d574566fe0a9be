"""Statistics behind every leaderboard number: means with 95% CIs, paired tests against a reference, ranks.

docs/statistics.md states exactly what each number is. In short:

- Per-frame segmentation metrics: frames -> patient mean (NaN frames ignored) per seed -> mean over seeds
  -> percentile bootstrap over patients. The unit, and ``n``, is the patient.
- Task metrics: one value per (seed, CV repeat); mean and Student-t interval over those values, ``n`` is
  their number.
- Paired comparison: differences on the units both rows share (patients, or (seed, repeat) pairs), a
  two-sided sign-flip permutation test of their mean, Holm-adjusted across the rows compared on one metric.

Everything is deterministic: the bootstrap and the permutation test draw from fixed seeds, so the same
results give the same leaderboard byte for byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from lusbench.evaluate.run_results import RunResults

CI_LEVEL = 0.95
ALPHA = 0.05
N_BOOTSTRAP = 2000
N_PERMUTATIONS = 10000
# Up to this many pairs the permutation test enumerates all 2**n sign patterns (exact p-value).
EXACT_PERMUTATION_MAX_N = 12
RANDOM_SEED = 0
# Resampling matrices are drawn in blocks of at most this many entries to bound memory on large n.
_BLOCK_ENTRIES = 4_000_000

UNIT_PATIENT = "patient"
UNIT_REPEAT = "seed_repeat"

MARK_BETTER = "better"
MARK_WORSE = "worse"
MARK_NOT_SIGNIFICANT = "ns"


@dataclass(frozen=True)
class Estimate:
    """A mean with its confidence interval; NaN where undefined (no values, or a CI from n < 2)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """``delta = mean(row - reference)`` over ``n`` shared units and its two-sided p-value."""

    delta: float
    p_value: float
    n: int


def _finite(values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def _mean_of_finite(values: np.ndarray | Sequence[float]) -> tuple[np.ndarray, float, Estimate | None]:
    """The finite values, their mean, and the Estimate to return as is when they are too few for an interval."""
    x = _finite(values)
    if len(x) == 0:
        return x, np.nan, Estimate(np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    return x, mean, Estimate(mean, np.nan, np.nan, len(x)) if len(x) < 2 else None


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


def nanmean_rows(stack: np.ndarray) -> np.ndarray:
    """Column-wise mean over the rows of ``stack`` ignoring NaN; NaN where a column has no finite value."""
    stack = np.asarray(stack, dtype=np.float64)
    ok = np.isfinite(stack)
    counts = ok.sum(axis=0)
    sums = np.where(ok, stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def bootstrap_mean_ci(
    values: np.ndarray | Sequence[float], *, n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL, seed: int = RANDOM_SEED
) -> Estimate:
    """Mean of the finite values and its percentile-bootstrap interval (resampling the values).

    The generator is seeded with ``seed``, so equal inputs give equal intervals, and two rows with the same
    number of units are resampled with the same indices.
    """
    x, mean, without_interval = _mean_of_finite(values)
    if without_interval is not None:
        return without_interval
    n = len(x)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // n)
    boot = np.concatenate(
        [x[rng.integers(0, n, size=(min(block, n_boot - start), n))].mean(axis=1) for start in range(0, n_boot, block)]
    )
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return Estimate(mean, float(low), float(high), n)


def t_mean_ci(values: np.ndarray | Sequence[float], *, level: float = CI_LEVEL) -> Estimate:
    """Mean of the finite values and its Student-t interval (``mean ± t_{n-1} · sd / sqrt(n)``)."""
    x, mean, without_interval = _mean_of_finite(values)
    if without_interval is not None:
        return without_interval
    n = len(x)
    half = float(sps.t.ppf(0.5 + level / 2.0, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n)


def paired_permutation_test(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    *,
    n_perm: int = N_PERMUTATIONS,
    seed: int = RANDOM_SEED,
) -> Comparison:
    """Two-sided sign-flip permutation test of ``mean(a - b) = 0`` on the pairs where both are finite.

    Under the null the sign of each paired difference is exchangeable. Up to ``EXACT_PERMUTATION_MAX_N``
    pairs every sign pattern is enumerated (exact p); beyond, ``n_perm`` random patterns are drawn and
    ``p = (1 + #{|T*| >= |T|}) / (1 + n_perm)``, which is never 0.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = len(d)
    if n == 0:
        return Comparison(np.nan, np.nan, 0)
    observed = abs(d.mean())
    # Exact ties with the observed statistic count as "as extreme"; the slack absorbs float rounding.
    threshold = observed - 1e-12 * max(1.0, observed)
    if n <= EXACT_PERMUTATION_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        p = float(np.mean(np.abs(signs @ d) / n >= threshold))
        return Comparison(float(d.mean()), p, n)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // n)
    extreme = 0
    for start in range(0, n_perm, block):
        signs = rng.choice((1.0, -1.0), size=(min(block, n_perm - start), n))
        extreme += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
    return Comparison(float(d.mean()), (1 + extreme) / (1 + n_perm), n)


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


def significance_mark(delta: float, p_value: float, higher_is_better: bool, *, alpha: float = ALPHA) -> str:
    """``better``/``worse`` when significant at ``alpha`` (direction-aware), ``ns`` when not, ``""`` untested."""
    if not (np.isfinite(p_value) and np.isfinite(delta)):
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


class RunStatistics:
    """Per-(row, metric) units of a :class:`RunResults`, and the estimates and comparisons built on them.

    A metric's unit is ``patient`` when any row reports it per frame, else ``seed_repeat`` when any row
    reports it as a task metric, else None (no row has it).
    """

    def __init__(self, results: RunResults) -> None:
        self.results = results
        self.patients, self.patient_index = np.unique(np.asarray(results.frame_patient), return_inverse=True)
        self.patient_index = self.patient_index.ravel()
        seg_names = {m for values in results.seg.values() for m in values}
        task_names = {m for values in results.tasks.values() for m in values}
        self.unit: dict[str, str | None] = {
            d.name: UNIT_PATIENT if d.name in seg_names else UNIT_REPEAT if d.name in task_names else None
            for d in results.metric_defs
        }

    def seeds(self, row: str, metric: str) -> list[int]:
        """The seeds for which ``row`` reports ``metric``."""
        source = self.results.seg if self.unit.get(metric) == UNIT_PATIENT else self.results.tasks
        return [s for s in self.results.seeds if metric in source.get((row, s), {})]

    def patient_values(self, row: str, metric: str, seeds: Sequence[int]) -> np.ndarray:
        """``(P,)`` per-patient value of ``row``: patient mean per seed, then mean over ``seeds`` (NaN-aware)."""
        per_seed = [
            patient_means(self.results.seg[(row, s)][metric], self.patient_index, len(self.patients)) for s in seeds
        ]
        if not per_seed:
            return np.full(len(self.patients), np.nan)
        return nanmean_rows(np.stack(per_seed))

    def repeat_values(self, row: str, metric: str, seeds: Sequence[int]) -> dict[tuple[int, int], float]:
        """Task values of ``row`` keyed by (seed, repeat)."""
        return {
            (s, r): float(v) if v is not None else np.nan
            for s in seeds
            for r, v in enumerate(self.results.tasks[(row, s)][metric])
        }

    def estimate(self, row: str, metric: str) -> tuple[Estimate, int]:
        """The row's estimate for ``metric`` and the number of seeds it pools."""
        seeds = self.seeds(row, metric)
        unit = self.unit.get(metric)
        if unit == UNIT_PATIENT:
            return bootstrap_mean_ci(self.patient_values(row, metric, seeds)), len(seeds)
        if unit == UNIT_REPEAT:
            return t_mean_ci(list(self.repeat_values(row, metric, seeds).values())), len(seeds)
        return Estimate(np.nan, np.nan, np.nan, 0), 0

    def compare(self, row: str, reference: str, metric: str) -> Comparison:
        """Paired test of ``row`` against ``reference`` on the seeds and units both report."""
        ref_seeds = set(self.seeds(reference, metric))
        seeds = [s for s in self.seeds(row, metric) if s in ref_seeds]
        unit = self.unit.get(metric)
        if unit == UNIT_PATIENT and seeds:
            return paired_permutation_test(
                self.patient_values(row, metric, seeds), self.patient_values(reference, metric, seeds)
            )
        if unit == UNIT_REPEAT and seeds:
            a = self.repeat_values(row, metric, seeds)
            b = self.repeat_values(reference, metric, seeds)
            keys = sorted(set(a) & set(b))
            return paired_permutation_test([a[k] for k in keys], [b[k] for k in keys])
        return Comparison(np.nan, np.nan, 0)
