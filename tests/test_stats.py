"""Statistics: the primitives (resampling, sign-flip tests, marks) and RunStatistics on planted data.

``make_results`` (also used by the leaderboard, check and report tests) builds a RunResults: patients with
several frames, per-frame metrics with patient effects, seeds, the fold that predicted every frame, CV repeats
shared across rows, NaN frames, reference rows with task metrics only, and planted strategy effects. The
acceptance tests of the methods (null calibration, power, DeLong) are in test_stats_calibration.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from lusbench.data.folds import patient_folds
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import LABELS_EXPERT, LABELS_TRUE, RunResults, TaskMetric
from lusbench.evaluate.stats import (
    EXACT_PERMUTATION_MAX_N,
    KIND_SEGMENTATION,
    KIND_TASK,
    MARK_BETTER,
    MARK_NOT_SIGNIFICANT,
    MARK_UNTESTABLE,
    MARK_WORSE,
    MIN_MODEL_PAIRS,
    UNIT_PATIENT,
    UNIT_REPEAT,
    RunStatistics,
    TaskRows,
    competition_ranks,
    hierarchical_estimates,
    holm_adjust,
    model_pair_test,
    paired_permutation_test,
    patient_means,
    resample_weights,
    sign_flip_p,
    significance_mark,
    t_mean_ci,
    task_point,
    task_replicates,
    task_swap_test,
)
from lusbench.evaluate.tasks import fold_mean

CLASSES = ("pleural_line", "a_lines", "b_lines", "consolidation", "effusion")
STRATEGIES = ("threshold:0.3", "threshold:0.5", "threshold:0.6", "threshold:0.8", "soft", "weighted")
# Planted segmentation effects on Dice (per frame) and task effects; soft and weighted equal the baseline.
DICE_EFFECT = {"threshold:0.3": -0.06, "threshold:0.5": 0.0, "threshold:0.6": 0.06, "threshold:0.8": 0.03,
               "soft": 0.0, "weighted": 0.0}
SF_MAE_EFFECT = {"threshold:0.3": 3.0, "threshold:0.5": 0.0, "threshold:0.6": -6.0, "threshold:0.8": -2.0,
                 "soft": 0.0, "weighted": 0.0, LABELS_EXPERT: -8.0, LABELS_TRUE: -12.0}
AUROC_EFFECT = {"threshold:0.6": 0.05}

METRIC_DEFS = [
    MetricDef("dice", True, "mean Dice over classes at the eval threshold"),
    *[MetricDef(f"dice.{c}", True, f"Dice of {c}") for c in CLASSES],
    MetricDef("iou", True, "mean IoU"),
    MetricDef("hd95", False, "95th percentile Hausdorff distance, pixels"),
    MetricDef("ece", False, "expected calibration error"),
    MetricDef("true.dice", True, "Dice against the true masks"),
    MetricDef("sf_ratio.mae", False, "S/F ratio mean absolute error"),
    MetricDef("sf_ratio.r2", True, "S/F ratio R^2"),
    MetricDef("sf_change.auroc", True, "S/F change AUROC"),
    MetricDef("readmission_30d.auroc", True, "30-day readmission AUROC"),
]
CONFIG = {"dataset": "synthetic-lus", "model": "unet:resnet18", "preset": "quick", "seeds": [0, 1, 2], "folds": 3,
          "eval_threshold": 0.5, "config_hash": "abc123"}
ENVIRONMENT = {"lusbench": "0.1.0", "torch": "2.4.0", "device": "cpu", "platform": "linux"}


def make_results(
    *, n_patients: int = 30, frames: int = 6, seeds: tuple[int, ...] = (0, 1, 2), repeats: int = 5, seed: int = 7,
    strategies: tuple[str, ...] = STRATEGIES, reference_strategy: str | None = "threshold:0.5",
) -> RunResults:
    rng = np.random.default_rng(seed)
    frame_patient = np.repeat(np.arange(100, 100 + n_patients), frames)
    n = len(frame_patient)
    patient_effect = rng.normal(0, 0.08, n_patients)[np.repeat(np.arange(n_patients), frames)]
    class_absent = {c: rng.random(n) < (0.4 if c == "effusion" else 0.05) for c in CLASSES}
    repeat_effect = rng.normal(0, 3.0, (max(seeds) + 1, repeats))  # shared across rows: repeat r pairs
    rows = [*strategies, LABELS_EXPERT, LABELS_TRUE]
    results = RunResults(config=dict(CONFIG, seeds=list(seeds)), environment=dict(ENVIRONMENT), metric_defs=list(METRIC_DEFS),
                         frame_patient=frame_patient, rows=rows, seeds=list(seeds),
                         references={LABELS_EXPERT, LABELS_TRUE}, reference_strategy=reference_strategy)
    edges = np.linspace(0, 1, 11)
    for row in rows:
        for s in seeds:
            if row in (LABELS_EXPERT, LABELS_TRUE):
                if s != seeds[0]:
                    continue  # reference rows train nothing: one seed, task metrics only
            else:
                base = 0.65 + patient_effect + DICE_EFFECT.get(row, 0.0) + rng.normal(0, 0.03, n)
                seg = {}
                per_class = []
                for k, c in enumerate(CLASSES):
                    v = np.clip(base + 0.05 * (k - 2) + rng.normal(0, 0.05, n), 0, 1)
                    v[class_absent[c]] = np.nan  # class absent in label and prediction: undefined
                    seg[f"dice.{c}"] = v
                    per_class.append(v)
                seg["dice"] = np.nanmean(np.stack(per_class), axis=0)
                seg["iou"] = seg["dice"] / (2 - seg["dice"])
                seg["hd95"] = np.clip(20 - 40 * (seg["dice"] - 0.65) + rng.normal(0, 2, n), 0, None)
                seg["ece"] = np.abs(0.05 + rng.normal(0, 0.02, n))
                seg["true.dice"] = np.clip(seg["dice"] + 0.05 + rng.normal(0, 0.02, n), 0, 1)
                results.seg[(row, s)] = seg
                for fold, frames in enumerate(patient_folds(frame_patient, CONFIG["folds"], s)):
                    results.frame_fold.setdefault((row, s), np.empty(n, dtype=np.int64))[frames] = fold
                prob = (edges[:-1] + edges[1:]) / 2
                results.calibration[(row, s)] = {
                    "bin_edges": edges.tolist(), "count": rng.integers(100, 10000, 10).tolist(),
                    "mean_prob": prob.tolist(), "frac_positive": np.clip(prob + 0.1 * (prob - 0.5), 0, 1).tolist(),
                }
            noise = rng.normal(0, 1.0, repeats)
            results.tasks[(row, s)] = {
                "sf_ratio.mae": (40 + SF_MAE_EFFECT.get(row, 0.0) + repeat_effect[s] + noise).tolist(),
                "sf_ratio.r2": (0.5 - SF_MAE_EFFECT.get(row, 0.0) / 100 + rng.normal(0, 0.02, repeats)).tolist(),
                "sf_change.auroc": (0.7 + AUROC_EFFECT.get(row, 0.0) + rng.normal(0, 0.01, repeats)).tolist(),
                "readmission_30d.auroc": (0.6 + rng.normal(0, 0.03, repeats)).tolist(),
            }
    return results


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC with midranks (ties count one half); NaN with a single class."""
    positive = y == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((sps.rankdata(score)[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def batched_auroc(y: np.ndarray, score: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """:func:`auroc` of the rows taken ``weight[b]`` times, for every ``b`` at once (a TaskMetric ``batched`` fn)."""
    order = np.argsort(score, kind="stable")
    positive, w = y[order] == 1, weight[:, order]
    first = np.unique(score[order], return_index=True)[1]  # where each group of tied scores starts
    pos = np.add.reduceat(w * positive, first, axis=1)
    neg = np.add.reduceat(w * ~positive, first, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    den = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y - pred)))


def batched_mae(y: np.ndarray, pred: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return (weight @ np.abs(y - pred)) / weight.sum(axis=1)


# ------------------------------------------------------------------------------------------- primitives


def test_patient_means_ignore_nan_frames_and_mark_empty_patients():
    values = np.array([0.2, np.nan, 0.4, np.nan, np.nan, 1.0])
    index = np.array([0, 0, 0, 1, 1, 2])
    means = patient_means(values, index, 3)
    assert means[0] == pytest.approx(0.3)
    assert np.isnan(means[1])
    assert means[2] == 1.0


def test_patient_means_reject_misaligned_frames():
    with pytest.raises(ValueError, match="shape"):
        patient_means(np.zeros(4), np.zeros(5, dtype=int), 1)


def hierarchical_estimate(values: np.ndarray, weights: np.ndarray, fold: np.ndarray | None = None):
    return hierarchical_estimates(np.asarray(values)[None], weights, fold)[0]


def test_resample_weights_draw_models_and_patients_with_replacement():
    rng = np.random.default_rng(0)
    n_seeds, k, n_patients = 3, 4, 40
    fold = np.stack([rng.permutation(np.arange(n_patients) % k) for _ in range(n_seeds)])
    w = resample_weights(fold, n_boot=500, seed=1)
    assert w.shape == (500, n_seeds, n_patients)
    for s in range(n_seeds):
        # Models are drawn as units: a model left out of a replicate takes all its patients with it. A model
        # is left out with probability (1 - 1/k)**k, about 0.32 for k = 4.
        dropped = np.array([[w[b, s, fold[s] == f].sum() == 0 for f in range(k)] for b in range(500)])
        assert 0.2 < dropped.mean() < 0.45
    # cell = model draws x patient draws, the patient draw shared by the seeds: for patients predicted by the
    # same pair of models at seeds 0 and 1, the ratio of their two cells is the ratio of the model draws.
    both = (w[:, 0] > 0) & (w[:, 1] > 0)
    ratio = np.where(both, w[:, 0] / np.maximum(w[:, 1], 1), np.nan)
    for f0, f1 in {(int(a), int(b)) for a, b in zip(fold[0], fold[1], strict=True)}:
        group = ratio[:, (fold[0] == f0) & (fold[1] == f1)]
        group = group[np.isfinite(group).any(axis=1)]
        assert len(group) > 0 and np.all(np.nanmax(group, axis=1) == np.nanmin(group, axis=1))
    # Every draw is a multinomial with equal probabilities: each cell is drawn once per replicate on average.
    assert w.mean() == pytest.approx(1.0, abs=0.05)
    assert np.array_equal(resample_weights(fold, n_boot=500, seed=1), w)


def test_resample_weights_share_one_patient_draw_across_seeds_and_respect_strata():
    strata = np.repeat([0, 1], [30, 10])
    w = resample_weights(np.zeros((2, 40), dtype=np.int64), strata, n_boot=300, seed=2)
    # One pseudo-model per seed (a row that trained nothing): the same patient draw at every seed.
    assert np.array_equal(w[:, 0], w[:, 1])
    assert (w[:, 0, :30].sum(axis=1) == 30).all() and (w[:, 0, 30:].sum(axis=1) == 10).all()


def test_hierarchical_estimate_without_models_is_the_patient_bootstrap():
    rng = np.random.default_rng(1)
    x = np.append(rng.normal(0.7, 0.1, 40), [np.nan, np.nan])[None, :]
    w = resample_weights(np.zeros(x.shape, dtype=np.int64), n_boot=2000, seed=0)
    est = hierarchical_estimate(x, w)
    assert est == hierarchical_estimate(x, w)
    assert (est.n, est.models) == (40, 0)
    assert est.mean == pytest.approx(np.nanmean(x))
    assert est.ci_low < est.mean < est.ci_high
    # About the normal-theory width: 2 * 1.96 * sd / sqrt(n).
    assert est.ci_high - est.ci_low == pytest.approx(2 * 1.96 * np.nanstd(x, ddof=1) / np.sqrt(40), rel=0.2)


def test_hierarchical_estimate_pools_finite_cells_and_counts_patients_and_models():
    values = np.array([[0.5, np.nan, 0.7, 0.9], [0.6, np.nan, np.nan, 0.8]])
    fold = np.array([[0, 0, 1, 1], [1, 1, 0, 0]])
    est = hierarchical_estimate(values, resample_weights(fold, n_boot=200, seed=0), fold)
    assert est.mean == pytest.approx(np.mean([0.5, 0.7, 0.9, 0.6, 0.8]))
    # Patient 1 has no finite cell; the models are (0, 0), (0, 1), (1, 1) and (1, 0), all behind a finite cell.
    assert (est.n, est.models) == (3, 4)


def test_hierarchical_estimates_of_stacked_metrics_equal_each_alone():
    rng = np.random.default_rng(3)
    fold = np.array([rng.permutation(np.arange(20) % 4)])
    values = rng.normal(0.6, 0.1, (3, 1, 20))
    values[1, 0, :5] = np.nan
    values[2] = np.nan
    w = resample_weights(fold, n_boot=300, seed=0)
    together = hierarchical_estimates(values, w, fold)
    assert together == [hierarchical_estimate(v, w, fold) for v in values]
    assert [e.n for e in together] == [20, 15, 0]


def test_degenerate_samples_give_no_interval():
    w = resample_weights(np.zeros((1, 2), dtype=np.int64), n_boot=100, seed=0)
    for est in (hierarchical_estimate(np.array([[np.nan, np.nan]]), w), t_mean_ci([np.nan, np.nan])):
        assert est.n == 0 and np.isnan(est.mean) and np.isnan(est.ci_low)
    for est in (hierarchical_estimate(np.array([[0.5, np.nan]]), w), t_mean_ci([0.5, np.nan])):
        assert est.n == 1 and est.mean == 0.5 and np.isnan(est.ci_low) and np.isnan(est.ci_high)


def test_t_interval_matches_scipy():
    x = [0.61, 0.66, 0.7, 0.64, 0.69, 0.72]
    est = t_mean_ci(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (est.ci_low, est.ci_high, est.n) == (pytest.approx(low), pytest.approx(high), 6)


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    reps, hits_boot, hits_t = 300, 0, 0
    for i in range(reps):
        x = rng.normal(0.6, 0.15, 30)[None, :]
        boot = hierarchical_estimate(x, resample_weights(np.zeros((1, 30), dtype=np.int64), n_boot=1000, seed=i))
        hits_boot += boot.ci_low <= 0.6 <= boot.ci_high
        t = t_mean_ci(x[0, :10])
        hits_t += t.ci_low <= 0.6 <= t.ci_high
    # Binomial(300, 0.95) has sd 1.3%: these bounds only fail for a badly wrong interval.
    assert 0.88 <= hits_boot / reps <= 0.99
    assert 0.90 <= hits_t / reps <= 0.99


def test_paired_test_detects_a_planted_shift():
    rng = np.random.default_rng(3)
    base = rng.normal(0.6, 0.1, 40)  # large between-unit spread, small paired noise: pairing matters
    shifted = base + 0.02 + rng.normal(0, 0.01, 40)
    result = paired_permutation_test(shifted, base)
    assert result.n == 40
    assert result.delta == pytest.approx(np.mean(shifted - base))
    assert result.p_value < 0.001


def test_paired_test_rejects_about_alpha_under_the_null():
    rng = np.random.default_rng(4)
    p = [paired_permutation_test(rng.normal(0, 1, 25), rng.normal(0, 1, 25), n_perm=2000, seed=i).p_value
         for i in range(300)]
    assert 0.01 <= np.mean(np.array(p) < 0.05) <= 0.10
    assert 0.35 <= np.median(p) <= 0.65  # p-values are about uniform under the null


def test_paired_test_is_exact_for_small_n_and_skips_incomplete_pairs():
    # 5 positive differences: only the all-plus and all-minus sign patterns are as extreme: p = 2 / 2**5.
    a = [1.0, 2.0, 3.0, 4.0, 5.0, np.nan]
    b = [0.5, 1.5, 2.5, 3.5, 4.5, 0.0]
    result = paired_permutation_test(a, b)
    assert result.n == 5
    assert result.p_value == pytest.approx(2 / 32)
    assert paired_permutation_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    none = paired_permutation_test([np.nan], [1.0])
    assert none.n == 0 and np.isnan(none.p_value) and np.isnan(none.delta)


def test_sign_flip_is_exact_up_to_the_enumeration_limit():
    x = np.array([0.3, -0.1, 0.25, 0.4, 0.05, 0.2, -0.05])
    # Brute force: the share of the 2**7 sign patterns whose |sum| reaches the observed |sum|.
    brute = np.mean([abs(np.dot(signs, x)) >= abs(x.sum()) - 1e-12 for signs in itertools.product((1, -1), repeat=7)])
    assert sign_flip_p(x) == pytest.approx(brute)
    assert sign_flip_p(np.ones(EXACT_PERMUTATION_MAX_N)) == pytest.approx(2 / 2**EXACT_PERMUTATION_MAX_N)
    # Beyond the limit: Monte Carlo, never 0.
    assert sign_flip_p(np.ones(EXACT_PERMUTATION_MAX_N + 1), n_perm=999) == pytest.approx(1 / 1000, abs=1e-3)


def test_model_pair_test_flips_whole_models():
    # 2 seeds x 3 folds x 4 patients; every patient of a model pair shares the pair's difference.
    fold = np.array([np.arange(12) % 3, (np.arange(12) + 1) % 3])
    pair_delta = np.array([[0.02, 0.03, -0.01], [0.04, 0.01, 0.02]])
    d = pair_delta[np.arange(2)[:, None], fold]
    a = 0.7 + d
    b = np.full(d.shape, 0.7)
    b[0, 5] = np.nan  # a missing cell drops out of its pair only
    result = model_pair_test(a, b, fold)
    ok = np.isfinite(b)
    assert result.delta == pytest.approx((a - b)[ok].mean())
    assert (result.n, result.models) == (12, 6)
    sums = [(a - b)[s][(fold[s] == f) & ok[s]].sum() for s in range(2) for f in range(3)]
    assert result.p_value == pytest.approx(sign_flip_p(np.array(sums)))
    # A per-patient sign flip would treat 23 cells as independent; the model pairs are only 6.
    assert result.p_value >= 2 / 2**6


def test_model_pair_test_needs_enough_model_pairs():
    fold = np.array([np.arange(30) % 3])
    few = model_pair_test(np.full((1, 30), 0.8), np.full((1, 30), 0.7), fold)
    assert few.models == 3 < MIN_MODEL_PAIRS and few.delta == pytest.approx(0.1) and np.isnan(few.p_value)
    untrained = model_pair_test(np.full((1, 30), 0.8), np.full((1, 30), 0.7), None)
    assert untrained.models == 0 and np.isnan(untrained.p_value) and untrained.n == 30
    nothing = model_pair_test(np.full((1, 3), np.nan), np.zeros((1, 3)), fold[:, :3])
    assert nothing.n == 0 and np.isnan(nothing.delta)


def test_holm_adjustment():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm_adjust([0.5, np.nan, 0.001])
    assert adjusted[0] == pytest.approx(0.5) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.002)
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("delta", "p", "higher", "models", "mark"),
    [(0.05, 0.01, True, 6, MARK_BETTER), (-0.05, 0.01, True, 9, MARK_WORSE), (-3.0, 0.01, False, None, MARK_BETTER),
     (3.0, 0.01, False, 25, MARK_WORSE), (0.05, 0.2, True, 6, MARK_NOT_SIGNIFICANT), (0.05, float("nan"), True, 6, ""),
     (0.05, float("nan"), True, 5, MARK_UNTESTABLE), (0.05, 0.001, True, 3, MARK_UNTESTABLE),
     (float("nan"), float("nan"), True, 0, "")],
)
def test_marks_are_direction_aware_and_need_enough_models(delta, p, higher, models, mark):
    assert significance_mark(delta, p, higher, models=models) == mark


def test_competition_ranks_are_direction_aware_with_ties_and_gaps():
    means = {"a": 0.7, "b": 0.8, "c": 0.7, "d": None, "e": float("nan")}
    assert competition_ranks(means, True) == {"a": 2, "b": 1, "c": 2, "d": None, "e": None}
    assert competition_ranks(means, False) == {"a": 1, "b": 3, "c": 1, "d": None, "e": None}


def test_task_rows_stratify_patients_by_class():
    pred = {"patient": [7, 7, 3, 5, 5, 9], "y_true": [1, 1, 0, 0, 1, 0], "kind": "classification",
            "repeats": [[0.5] * 6], "folds": [[0] * 6]}
    rows = TaskRows.of([pred, dict(pred)])
    assert rows.patients.tolist() == [3, 5, 7, 9]
    assert rows.patient_of.tolist() == [2, 2, 0, 1, 1, 3]
    # Patient 5 has rows of both classes: a stratum of its own.
    assert rows.strata.tolist() == [0.0, 2.0, 1.0, 0.0]
    assert TaskRows.of([{**pred, "kind": "regression"}]).strata is None
    with pytest.raises(ValueError, match="same rows"):
        TaskRows.of([pred, {**pred, "y_true": [1, 1, 0, 0, 1, 1]}])


# ------------------------------------------------------------------------------------------ RunStatistics


@pytest.fixture(scope="module")
def run_stats() -> RunStatistics:
    return RunStatistics(make_results())


def test_units_and_seeds_follow_where_each_metric_is_reported(run_stats):
    assert (run_stats.unit["dice.effusion"], run_stats.kind["dice.effusion"]) == (UNIT_PATIENT, KIND_SEGMENTATION)
    assert (run_stats.unit["sf_ratio.mae"], run_stats.kind["sf_ratio.mae"]) == (UNIT_REPEAT, KIND_TASK)
    assert run_stats.seeds("soft", "dice") == [0, 1, 2]
    assert run_stats.seeds(LABELS_EXPERT, "dice") == []
    assert run_stats.seeds(LABELS_EXPERT, "sf_ratio.mae") == [0]


def test_segmentation_estimate_is_the_mean_of_the_finite_seed_patient_cells(run_stats):
    results = run_stats.results
    est, n_seeds = run_stats.estimate("threshold:0.6", "dice.effusion")
    patients = np.unique(results.frame_patient)
    cells = np.full((3, len(patients)), np.nan)
    for s in results.seeds:
        v = results.seg[("threshold:0.6", s)]["dice.effusion"]
        for i, p in enumerate(patients):
            frames = v[results.frame_patient == p]
            if np.isfinite(frames).any():
                cells[s, i] = np.nanmean(frames)
    # Effusion is absent from every frame of one patient (NaN Dice): that patient drops out of n.
    assert (~np.isfinite(cells).any(axis=0)).sum() == 1
    assert (n_seeds, est.n, est.models) == (3, 29, 9)  # 3 seeds x 3 folds trained models
    assert est.mean == pytest.approx(np.nanmean(cells))
    assert est.ci_low < est.mean < est.ci_high
    empty, no_seeds = run_stats.estimate(LABELS_EXPERT, "dice")
    assert (empty.n, no_seeds) == (0, 0) and np.isnan(empty.mean)


def test_task_estimate_pools_seeds_and_repeats(run_stats):
    est, n_seeds = run_stats.estimate("soft", "sf_ratio.mae")
    values = [v for s in (0, 1, 2) for v in run_stats.results.tasks[("soft", s)]["sf_ratio.mae"]]
    assert (est.n, n_seeds, est.models) == (15, 3, 9)
    assert est.mean == pytest.approx(np.mean(values))
    ref, ref_seeds = run_stats.estimate(LABELS_TRUE, "sf_ratio.mae")
    assert (ref.n, ref_seeds, ref.models) == (5, 1, 0)


def test_paired_comparisons_on_planted_data(run_stats):
    better = run_stats.compare("threshold:0.6", "threshold:0.5", "dice")
    # 9 model pairs: the exact sign-flip p-value of a difference positive in every pair is 2 / 2**9.
    assert (better.n, better.models) == (30, 9)
    assert better.delta == pytest.approx(0.06, abs=0.02) and better.p_value == pytest.approx(2 / 2**9)
    same = run_stats.compare("soft", "threshold:0.5", "dice")
    assert same.p_value > 0.05
    task = run_stats.compare("threshold:0.6", "threshold:0.5", "sf_ratio.mae")
    # (seed, repeat) pairs share the repeat effect, which pairing cancels.
    assert (task.n, task.models) == (15, 9) and task.delta == pytest.approx(-6.0, abs=1.0) and task.p_value < 0.001
    assert run_stats.compare("soft", "threshold:0.5", "sf_ratio.mae").p_value > 0.05


def test_comparison_with_a_row_that_trained_nothing_is_untestable(run_stats):
    # The reference rows have seed 0 only and no models: 5 repeats pair, but no model pair stands behind them.
    result = run_stats.compare("soft", LABELS_EXPERT, "sf_ratio.mae")
    assert (result.n, result.models) == (5, 0) and np.isfinite(result.delta) and np.isnan(result.p_value)
    assert run_stats.compare("soft", LABELS_EXPERT, "dice").n == 0


def test_folds_must_follow_patients_and_pair_across_rows():
    results = make_results(n_patients=12, seeds=(0,), strategies=("threshold:0.5", "soft"))
    split = results.frame_fold[("soft", 0)]
    split[0] = (split[0] + 1) % 3  # one frame of a patient predicted by another fold's model
    with pytest.raises(ValueError, match="one fold's model"):
        RunStatistics(results).estimate("soft", "dice")
    results = make_results(n_patients=12, seeds=(0,), strategies=("threshold:0.5", "soft"))
    results.frame_fold[("soft", 0)] = (results.frame_fold[("soft", 0)] + 1) % 3
    with pytest.raises(ValueError, match="different folds"):
        RunStatistics(results).compare("soft", "threshold:0.5", "dice")


def test_task_predictions_make_the_patient_the_unit():
    results = make_results(n_patients=20, seeds=(0, 1), strategies=("threshold:0.5", "soft"))
    rng = np.random.default_rng(6)
    patients = np.unique(results.frame_patient)
    visit_patient = np.repeat(patients, 2)  # a visit-level task: two rows per patient
    y = rng.normal(300, 60, len(visit_patient))
    for row in results.rows:
        for s in results.seeds:
            repeats = [y + rng.normal(0, 30, len(y)) for _ in range(3)]
            folds = [rng.integers(0, 5, len(y)) for _ in range(3)]
            results.task_predictions[(row, s)] = {"sf-ratio": {"patient": visit_patient, "y_true": y, "kind": "regression",
                                                               "repeats": repeats, "folds": folds}}
    results.task_metrics["sf_ratio.mae"] = TaskMetric("sf-ratio", mae)
    run = RunStatistics(results, n_task_boot=200)
    assert (run.unit["sf_ratio.mae"], run.kind["sf_ratio.mae"]) == (UNIT_PATIENT, KIND_TASK)
    assert run.unit["sf_ratio.r2"] == UNIT_REPEAT  # no TaskMetric: the per-repeat values as before
    est, n_seeds = run.estimate("soft", "sf_ratio.mae")
    expected = np.mean([mae(y, p) for s in (0, 1) for p in results.task_predictions[("soft", s)]["sf-ratio"]["repeats"]])
    assert (est.n, n_seeds, est.models) == (20, 2, 6)
    assert est.mean == pytest.approx(expected) and est.ci_low < est.mean < est.ci_high
    ref, _ = run.estimate(LABELS_TRUE, "sf_ratio.mae")
    assert (ref.n, ref.models) == (20, 0)
    result = run.compare("soft", "threshold:0.5", "sf_ratio.mae")
    soft_vs = run.estimate("soft", "sf_ratio.mae")[0].mean - run.estimate("threshold:0.5", "sf_ratio.mae")[0].mean
    assert (result.n, result.models) == (20, 6) and result.delta == pytest.approx(soft_vs)
    assert 0 < result.p_value <= 1
    few = make_results(n_patients=20, seeds=(0,), strategies=("threshold:0.5", "soft"))
    few.task_predictions = {k: v for k, v in results.task_predictions.items() if k[1] == 0}
    few.task_metrics = results.task_metrics
    untestable = RunStatistics(few, n_task_boot=50).compare("soft", "threshold:0.5", "sf_ratio.mae")
    assert untestable.models == 3 and np.isnan(untestable.p_value) and np.isfinite(untestable.delta)


def _classification(n: int, seeds: int, repeats: int, seed: int) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.float64)
    patients = np.arange(n) + 100
    preds = [{"patient": patients, "y_true": y, "kind": "classification",
              "repeats": [np.round(y + rng.normal(0, 1, n), 1) for _ in range(repeats)],  # rounded: ties
              "folds": [rng.integers(0, 4, n) for _ in range(repeats)]} for _ in range(seeds)]
    return preds, np.stack([rng.permutation(np.arange(n) % 3) for _ in range(seeds)])


@pytest.mark.parametrize("per_fold", [False, True])
def test_batched_and_plain_task_metrics_give_the_same_replicates(per_fold):
    preds, fold = _classification(30, seeds=2, repeats=2, seed=8)
    rows = TaskRows.of(preds)
    weights = resample_weights(fold, rows.strata, n_boot=40, seed=0)
    plain_metric = TaskMetric("t", auroc, per_fold=per_fold)
    batched_metric = TaskMetric("t", batched_auroc, per_fold=per_fold, batched=True)
    plain = task_replicates(preds, plain_metric, rows, weights)
    assert plain == pytest.approx(task_replicates(preds, batched_metric, rows, weights), nan_ok=True)
    point = task_point(preds, plain_metric, rows)
    assert point == pytest.approx(task_point(preds, batched_metric, rows))
    # By hand: replicate b takes each row as often as its cell is drawn; per fold as fold_mean does it.
    y, index = rows.y_true, np.arange(30)
    for b in range(5):
        values = []
        for s, pred in enumerate(preds):
            take = np.repeat(index, weights[b, s, rows.patient_of].astype(int))
            for score, f in zip(pred["repeats"], pred["folds"], strict=True):
                values.append(fold_mean(auroc, y[take], score[take], f[take]) if per_fold else auroc(y[take], score[take]))
        assert plain[b] == pytest.approx(np.nanmean(values))
    assert point == pytest.approx(np.mean([fold_mean(auroc, y, p, f) if per_fold else auroc(y, p)
                                              for pred in preds for p, f in zip(pred["repeats"], pred["folds"], strict=True)]))


def test_task_swap_test_trades_whole_model_pairs():
    rng = np.random.default_rng(9)
    n, k = 24, 6
    patients = np.arange(n)
    y = rng.normal(300, 50, n)
    fold = np.array([np.arange(n) % k])
    folds = [rng.integers(0, 3, n)]
    a = {"patient": patients, "y_true": y, "kind": "regression", "repeats": [y + rng.normal(5, 20, n)], "folds": folds}
    b = {**a, "repeats": [y + rng.normal(0, 20, n)]}
    rows = TaskRows.of([a])
    p = task_swap_test([a], [b], TaskMetric("t", mae), rows, fold)
    # Brute force over the 2**6 patterns of traded model pairs.
    observed = mae(y, a["repeats"][0]) - mae(y, b["repeats"][0])
    permuted = []
    for traded in itertools.product((False, True), repeat=k):
        swap = np.array(traded)[fold[0]]
        pa = np.where(swap, b["repeats"][0], a["repeats"][0])
        pb = np.where(swap, a["repeats"][0], b["repeats"][0])
        permuted.append(mae(y, pa) - mae(y, pb))
    assert p == pytest.approx(np.mean(np.abs(permuted) >= abs(observed) - 1e-9))
    batched = task_swap_test([a], [b], TaskMetric("t", batched_mae, batched=True), rows, fold)
    assert batched == pytest.approx(p)
    assert task_swap_test([a], [a], TaskMetric("t", mae), rows, fold) == 1.0


def test_collect_fills_the_fold_of_every_frame():
    from lusbench.results.collect import _collect_segmentation

    class Keys:
        def cell(self, row, seed, fold):
            return (row, seed, fold)

    records = {("soft", 0, 0): {"frames": [0, 3], "metrics": {"dice": [0.1, 0.4]}},
               ("soft", 0, 1): {"frames": [1, 2], "metrics": {"dice": [0.2, 0.3]}}}

    class Store:
        def get(self, key):
            return records.get(key)

    metrics, calibration, frame_fold = _collect_segmentation(Store(), Keys(), "soft", [(0, 0), (0, 1)], 4)
    assert metrics["dice"].tolist() == [0.1, 0.2, 0.3, 0.4] and calibration is None
    assert frame_fold.tolist() == [0, 1, 1, 0]
    assert _collect_segmentation(Store(), Keys(), "soft", [(0, 0), (0, 2)], 4) is None
