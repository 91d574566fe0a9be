"""Statistics: CIs that cover, paired tests that detect planted differences and stay quiet without one.

``make_results`` (also used by the leaderboard, check and report tests) builds a realistic RunResults:
patients with several frames, per-frame metrics with patient effects, seeds, CV repeats shared across
rows, NaN frames, reference rows with task metrics only, and planted strategy effects.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import REFERENCE_EXPERT, REFERENCE_TRUE, RunResults
from lusbench.evaluate.stats import (
    EXACT_PERMUTATION_MAX_N,
    MARK_BETTER,
    MARK_NOT_SIGNIFICANT,
    MARK_WORSE,
    UNIT_PATIENT,
    UNIT_REPEAT,
    RunStatistics,
    bootstrap_mean_ci,
    competition_ranks,
    holm_adjust,
    paired_permutation_test,
    patient_means,
    significance_mark,
    t_mean_ci,
)

CLASSES = ("pleural_line", "a_lines", "b_lines", "consolidation", "effusion")
STRATEGIES = ("threshold:0.3", "threshold:0.5", "threshold:0.6", "threshold:0.8", "soft", "weighted")
# Planted segmentation effects on Dice (per frame) and task effects; soft and weighted equal the baseline.
DICE_EFFECT = {"threshold:0.3": -0.06, "threshold:0.5": 0.0, "threshold:0.6": 0.06, "threshold:0.8": 0.03,
               "soft": 0.0, "weighted": 0.0}
SF_MAE_EFFECT = {"threshold:0.3": 3.0, "threshold:0.5": 0.0, "threshold:0.6": -6.0, "threshold:0.8": -2.0,
                 "soft": 0.0, "weighted": 0.0, REFERENCE_EXPERT: -8.0, REFERENCE_TRUE: -12.0}
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
    rows = [*strategies, REFERENCE_EXPERT, REFERENCE_TRUE]
    results = RunResults(config=dict(CONFIG, seeds=list(seeds)), environment=dict(ENVIRONMENT), metric_defs=list(METRIC_DEFS),
                         frame_patient=frame_patient, rows=rows, seeds=list(seeds),
                         references={REFERENCE_EXPERT, REFERENCE_TRUE}, reference_strategy=reference_strategy)
    edges = np.linspace(0, 1, 11)
    for row in rows:
        for s in seeds:
            if row in (REFERENCE_EXPERT, REFERENCE_TRUE):
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


def test_bootstrap_ci_is_deterministic_brackets_the_mean_and_counts_finite_units():
    rng = np.random.default_rng(1)
    x = np.append(rng.normal(0.7, 0.1, 40), [np.nan, np.nan])
    a, b = bootstrap_mean_ci(x), bootstrap_mean_ci(x)
    assert a == b
    assert a.n == 40
    assert a.mean == pytest.approx(np.nanmean(x))
    assert a.ci_low < a.mean < a.ci_high
    # About the normal-theory width: 2 * 1.96 * sd / sqrt(n).
    assert a.ci_high - a.ci_low == pytest.approx(2 * 1.96 * np.nanstd(x, ddof=1) / np.sqrt(40), rel=0.2)


@pytest.mark.parametrize("ci", [bootstrap_mean_ci, t_mean_ci])
def test_degenerate_samples_give_no_interval(ci):
    empty = ci([np.nan, np.nan])
    assert empty.n == 0 and np.isnan(empty.mean) and np.isnan(empty.ci_low)
    single = ci([0.5, np.nan])
    assert single.n == 1 and single.mean == 0.5 and np.isnan(single.ci_low) and np.isnan(single.ci_high)


def test_t_interval_matches_scipy():
    x = [0.61, 0.66, 0.7, 0.64, 0.69, 0.72]
    est = t_mean_ci(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (est.ci_low, est.ci_high, est.n) == (pytest.approx(low), pytest.approx(high), 6)


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    reps, hits_boot, hits_t = 300, 0, 0
    for i in range(reps):
        x = rng.normal(0.6, 0.15, 30)
        boot = bootstrap_mean_ci(x, seed=i)
        hits_boot += boot.ci_low <= 0.6 <= boot.ci_high
        t = t_mean_ci(x[:10])
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
    assert 5 <= EXACT_PERMUTATION_MAX_N
    assert paired_permutation_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    none = paired_permutation_test([np.nan], [1.0])
    assert none.n == 0 and np.isnan(none.p_value) and np.isnan(none.delta)


def test_holm_adjustment():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm_adjust([0.5, np.nan, 0.001])
    assert adjusted[0] == pytest.approx(0.5) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.002)
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]


@pytest.mark.parametrize(
    ("delta", "p", "higher", "mark"),
    [(0.05, 0.01, True, MARK_BETTER), (-0.05, 0.01, True, MARK_WORSE), (-3.0, 0.01, False, MARK_BETTER),
     (3.0, 0.01, False, MARK_WORSE), (0.05, 0.2, True, MARK_NOT_SIGNIFICANT), (0.05, float("nan"), True, "")],
)
def test_marks_are_direction_aware(delta, p, higher, mark):
    assert significance_mark(delta, p, higher) == mark


def test_competition_ranks_are_direction_aware_with_ties_and_gaps():
    means = {"a": 0.7, "b": 0.8, "c": 0.7, "d": None, "e": float("nan")}
    assert competition_ranks(means, True) == {"a": 2, "b": 1, "c": 2, "d": None, "e": None}
    assert competition_ranks(means, False) == {"a": 1, "b": 3, "c": 1, "d": None, "e": None}


# ------------------------------------------------------------------------------------------ RunStatistics


@pytest.fixture(scope="module")
def run_stats() -> RunStatistics:
    return RunStatistics(make_results())


def test_units_and_seeds_follow_where_each_metric_is_reported(run_stats):
    assert run_stats.unit["dice.effusion"] == UNIT_PATIENT
    assert run_stats.unit["sf_ratio.mae"] == UNIT_REPEAT
    assert run_stats.seeds("soft", "dice") == [0, 1, 2]
    assert run_stats.seeds(REFERENCE_EXPERT, "dice") == []
    assert run_stats.seeds(REFERENCE_EXPERT, "sf_ratio.mae") == [0]


def test_segmentation_estimate_is_the_patient_level_mean_over_seeds(run_stats):
    results = run_stats.results
    est, n_seeds = run_stats.estimate("threshold:0.6", "dice.effusion")
    patients = np.unique(results.frame_patient)
    sums, counts = np.zeros(len(patients)), np.zeros(len(patients))
    for s in results.seeds:
        v = results.seg[("threshold:0.6", s)]["dice.effusion"]
        for i, p in enumerate(patients):
            frames = v[results.frame_patient == p]
            if np.isfinite(frames).any():
                sums[i] += np.nanmean(frames)
                counts[i] += 1
    # Effusion is absent from every frame of one patient (NaN Dice): that patient drops out of n.
    assert (counts == 0).sum() == 1
    assert n_seeds == 3
    assert est.n == 29
    assert est.mean == pytest.approx(np.mean(sums[counts > 0] / counts[counts > 0]))
    empty, no_seeds = run_stats.estimate(REFERENCE_EXPERT, "dice")
    assert (empty.n, no_seeds) == (0, 0) and np.isnan(empty.mean)


def test_task_estimate_pools_seeds_and_repeats(run_stats):
    est, n_seeds = run_stats.estimate("soft", "sf_ratio.mae")
    values = [v for s in (0, 1, 2) for v in run_stats.results.tasks[("soft", s)]["sf_ratio.mae"]]
    assert (est.n, n_seeds) == (15, 3)
    assert est.mean == pytest.approx(np.mean(values))
    ref, ref_seeds = run_stats.estimate(REFERENCE_TRUE, "sf_ratio.mae")
    assert (ref.n, ref_seeds) == (5, 1)


def test_paired_comparisons_on_planted_data(run_stats):
    better = run_stats.compare("threshold:0.6", "threshold:0.5", "dice")
    assert better.n == 30 and better.delta == pytest.approx(0.06, abs=0.02) and better.p_value < 0.001
    same = run_stats.compare("soft", "threshold:0.5", "dice")
    assert same.p_value > 0.05
    task = run_stats.compare("threshold:0.6", "threshold:0.5", "sf_ratio.mae")
    # (seed, repeat) pairs share the repeat effect, which pairing cancels.
    assert task.n == 15 and task.delta == pytest.approx(-6.0, abs=1.0) and task.p_value < 0.001
    assert run_stats.compare("soft", "threshold:0.5", "sf_ratio.mae").p_value > 0.05


def test_paired_comparison_uses_only_shared_seeds(run_stats):
    # The reference rows have seed 0 only: a comparison with them pairs the 5 repeats of seed 0.
    result = run_stats.compare("soft", REFERENCE_EXPERT, "sf_ratio.mae")
    assert result.n == 5
    assert run_stats.compare("soft", REFERENCE_EXPERT, "dice").n == 0
