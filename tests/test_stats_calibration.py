"""Acceptance tests of the statistics (issue 9): null calibration, power, task-level calibration, DeLong agreement.

The simulator builds what the runner builds (lusbench/exec/grid.py, lusbench/results/collect.py): patients
with several frames each, split into folds per seed by :func:`lusbench.data.folds.patient_folds`; the
reference strategy and the strategy have values at every seed and fold, and the fold of every frame; each
trained model adds its own offset (training randomness); every patient has an effect shared by both rows and
all seeds; some frames are NaN (a class absent from label and prediction); the reference rows have values at
every seed and no trained model. Thresholds are the issue's: false-positive rate <= 0.07 at alpha 0.05 over
at least 400 simulated leaderboards, power >= 0.80 for a planted 0.03 at model SD 0.01 with 3 seeds x 5 folds
x 60 patients, DeLong agreement within 0.02.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from test_stats import auroc, batched_auroc, batched_mae, mae

from lusbench.data.folds import patient_folds
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import LABELS_EXPERT, RunResults, TaskMetric
from lusbench.evaluate.stats import (
    ALPHA,
    MARK_BETTER,
    MARK_UNTESTABLE,
    MARK_WORSE,
    RunStatistics,
    holm_adjust,
    paired_permutation_test,
    significance_mark,
)
from lusbench.evaluate.tasks import grouped_splits
from lusbench.results.leaderboard import build_leaderboard
from lusbench.results.render import render

BASELINE, STRATEGY = "threshold:0.5", "threshold:0.55"
PRIMARY = "true.dice"  # the primary segmentation metric on data with true masks (issue 9, item 3)
SIMULATIONS = 400
MAX_FPR = 0.07
MIN_POWER = 0.80
DELONG_TOLERANCE = 0.02
PATIENTS = 60
TASK_REPEATS = 2
TASK_FOLDS = 5
METRIC_DEFS = [MetricDef(PRIMARY, True, "Dice against the true masks"),
               MetricDef("sf_ratio.mae", False, "S/F ratio MAE"),
               MetricDef("readmission_30d.auroc", True, "30-day readmission AUROC")]


# Batched (all resamples in one call): the task tests run thousands of leaderboards.
TASK_METRICS = {"sf_ratio.mae": TaskMetric("sf-ratio", batched_mae, batched=True),
                "readmission_30d.auroc": TaskMetric("readmission-30d", batched_auroc, per_fold=True, batched=True)}


def simulate_run(rng: np.random.Generator, *, seeds: int, folds: int, model_sd: float, delta: float = 0.0,
                 patients: int = PATIENTS, tasks: bool = False, task_gain: float = 0.0) -> RunResults:
    """One run of the baseline and a strategy that adds ``delta`` Dice (and ``task_gain``, see
    :func:`add_task_predictions`), as the runner would collect it."""
    frames = rng.integers(3, 9, patients)  # 3 to 8 frames per patient
    ids = np.arange(1000, 1000 + patients)
    frame_patient = np.repeat(ids, frames)
    n = len(frame_patient)
    patient_of_frame = np.repeat(np.arange(patients), frames)
    patient_effect = rng.normal(0, 0.08, patients)  # shared by both rows and every seed
    seed_list = list(range(seeds))
    results = RunResults(config={"seeds": seed_list, "folds": folds}, environment={}, metric_defs=list(METRIC_DEFS),
                         frame_patient=frame_patient, rows=[BASELINE, STRATEGY, LABELS_EXPERT], seeds=seed_list,
                         references={LABELS_EXPERT}, reference_strategy=BASELINE)
    # The expert labels against the true masks: no model, the same values at every seed.
    labels = np.clip(0.8 + patient_effect[patient_of_frame] + rng.normal(0, 0.05, n), 0, 1)
    for s in seed_list:
        fold_of_frame = np.empty(n, dtype=np.int64)
        for f, members in enumerate(patient_folds(frame_patient, folds, s)):
            fold_of_frame[members] = f
        results.seg[(LABELS_EXPERT, s)] = {PRIMARY: labels}
        for row in (BASELINE, STRATEGY):
            offset = rng.normal(0, model_sd, folds)[fold_of_frame]  # one offset per trained model
            patient_noise = rng.normal(0, 0.02, patients)[patient_of_frame]  # this model on this patient
            values = 0.7 + patient_effect[patient_of_frame] + offset + patient_noise + rng.normal(0, 0.05, n)
            values = np.clip(values + (delta if row == STRATEGY else 0.0), 0, 1)
            values[rng.random(n) < 0.05] = np.nan
            results.seg[(row, s)] = {PRIMARY: values}
            results.frame_fold[(row, s)] = fold_of_frame
    if tasks:
        add_task_predictions(rng, results, patient_effect, gain=task_gain)
    return results


def add_task_predictions(rng: np.random.Generator, results: RunResults, patient_effect: np.ndarray, *,
                         gain: float) -> None:
    """Per-patient out-of-fold predictions of two tasks for every row and seed, and their per-repeat values.

    A visit-level regression (S/F ratio, two visits per patient) and a patient-level classification
    (readmission, AUROC averaged over the task-CV folds). The segmentation model that predicted a patient
    shifts that patient's task prediction (features come from its segmentation): training randomness reaches
    the tasks through the same (seed, fold) models. The task-CV splits are shared by the rows, as in
    :class:`lusbench.evaluate.tasks.SupervisedTask`. The strategy's features are better by ``gain``: its S/F
    errors shrink by that fraction and its readmission scores separate the classes by ``2 * gain`` more.
    """
    patients = np.unique(results.frame_patient)
    n = len(patients)
    visit_patient = np.repeat(patients, 2)
    sf = 300 + 300 * np.repeat(patient_effect, 2) + rng.normal(0, 40, 2 * n)
    sf_shared = rng.normal(0, 40, 2 * n)  # what no segmentation can explain: the same for every row
    readmitted = (rng.random(n) < 0.3).astype(np.float64)
    latent = 1.2 * readmitted + rng.normal(0, 1, n)
    folds = results.config["folds"]
    for s in results.seeds:
        # The segmentation model of each patient at this seed (the same folds for both strategies).
        fold_of = dict(zip(results.frame_patient.tolist(), results.frame_fold[(BASELINE, s)].tolist(), strict=True))
        model = np.array([fold_of[p] for p in patients])
        splits_sf = grouped_splits(visit_patient, folds=TASK_FOLDS, repeats=TASK_REPEATS, seed=s)
        splits_re = stratified_splits(rng, readmitted)
        for row in results.rows:
            trained = row != LABELS_EXPERT
            shift_sf = rng.normal(0, 15, folds)[model] if trained else np.zeros(n)
            shift_re = rng.normal(0, 0.5, folds)[model] if trained else np.zeros(n)
            better = gain if row == STRATEGY else 0.0
            base_sf = sf + (1 - better) * (sf_shared + np.repeat(shift_sf, 2) + rng.normal(0, 10, 2 * n))
            base_re = latent + 2 * better * readmitted + shift_re + rng.normal(0, 0.3, n)
            preds_sf = [base_sf + rng.normal(0, 5, 2 * n) for _ in range(TASK_REPEATS)]
            preds_re = [base_re + rng.normal(0, 0.1, n) for _ in range(TASK_REPEATS)]
            folds_sf = [_fold_labels(repeat, 2 * n) for repeat in splits_sf]
            folds_re = [_fold_labels(repeat, n) for repeat in splits_re]
            results.task_predictions[(row, s)] = {
                "sf-ratio": {"patient": visit_patient, "y_true": sf, "kind": "regression", "repeats": preds_sf,
                             "folds": folds_sf},
                "readmission-30d": {"patient": patients, "y_true": readmitted, "kind": "classification",
                                    "repeats": preds_re, "folds": folds_re},
            }
            results.tasks[(row, s)] = {
                "sf_ratio.mae": [mae(sf, p) for p in preds_sf],
                "readmission_30d.auroc": [float(np.nanmean([auroc(readmitted[t], p[t]) for _, t in repeat]))
                                          for p, repeat in zip(preds_re, splits_re, strict=True)],
            }
    results.task_metrics.update(TASK_METRICS)


def stratified_splits(rng: np.random.Generator, y: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Stratified patient folds per repeat, one row per patient (what StratifiedGroupKFold gives, without its cost)."""
    out = []
    for _ in range(TASK_REPEATS):
        fold = np.empty(len(y), dtype=np.int64)
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            fold[members] = np.arange(len(members)) % TASK_FOLDS
        out.append([(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(TASK_FOLDS)])
    return out


def _fold_labels(repeat: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    fold = np.empty(n, dtype=np.int64)
    for f, (_, test) in enumerate(repeat):
        fold[test] = f
    return fold


def leaderboard_mark(run: RunStatistics, metric: str) -> str:
    """The strategy's mark as build_leaderboard computes it (one strategy compared: the Holm family of one)."""
    t = run.compare(STRATEGY, BASELINE, metric)
    higher = next(d.higher_is_better for d in METRIC_DEFS if d.name == metric)
    return significance_mark(t.delta, holm_adjust([t.p_value])[0], higher, models=t.models)


def naive_patient_mark(run: RunStatistics) -> bool:
    """The previous method on the same data: a sign flip per patient (seed-averaged), blind to the models."""
    seeds = run.results.seeds

    def patient_values(row: str) -> np.ndarray:
        cells = run.cell_values(row, PRIMARY, seeds)
        with np.errstate(invalid="ignore"):
            return np.nansum(cells, axis=0) / np.isfinite(cells).sum(axis=0)

    return paired_permutation_test(patient_values(STRATEGY), patient_values(BASELINE), n_perm=2000).p_value < ALPHA


# ------------------------------------------------------------------------------- (a) null calibration


@pytest.mark.parametrize("model_sd", [0.01, 0.02])
@pytest.mark.parametrize(("seeds", "folds"), [(2, 3), (3, 5), (1, 10)])
def test_identical_procedures_are_marked_at_most_7_percent_of_the_time(seeds, folds, model_sd):
    rng = np.random.default_rng(1000 * seeds + folds + int(model_sd * 1000))
    marked = naive = 0
    for _ in range(SIMULATIONS):
        run = RunStatistics(simulate_run(rng, seeds=seeds, folds=folds, model_sd=model_sd))
        mark = leaderboard_mark(run, PRIMARY)
        assert mark != MARK_UNTESTABLE  # every shape here has at least 6 model pairs
        marked += mark in (MARK_BETTER, MARK_WORSE)
        naive += naive_patient_mark(run)
    fpr = marked / SIMULATIONS
    print(f"\n{seeds} seeds x {folds} folds, model SD {model_sd}: FPR {fpr:.3f} (per-patient test: "
          f"{naive / SIMULATIONS:.3f})")
    assert fpr <= MAX_FPR
    if model_sd == 0.02:
        # The simulation carries training noise that matters: a test blind to it fails the same bar.
        assert naive / SIMULATIONS > MAX_FPR


def test_one_seed_three_folds_is_untestable_everywhere():
    rng = np.random.default_rng(13)
    results = simulate_run(rng, seeds=1, folds=3, model_sd=0.02, delta=0.2, tasks=True)
    doc = build_leaderboard(results)
    strategy = next(r for r in doc["rows"] if r["strategy"] == STRATEGY)
    # A planted 0.2 Dice is not enough: 3 model pairs cannot tell a strategy from its training noise.
    assert {m: c["mark"] for m, c in strategy["comparison"].items()} == {d.name: MARK_UNTESTABLE for d in METRIC_DEFS}
    assert all(c["p_value"] is None and c["models"] == 3 for c in strategy["comparison"].values())
    assert strategy["comparison"][PRIMARY]["delta"] == pytest.approx(0.2, abs=0.03)
    assert strategy["metrics"][PRIMARY]["n"] == PATIENTS and strategy["metrics"][PRIMARY]["models"] == 3
    assert strategy["metrics"]["readmission_30d.auroc"]["n"] == PATIENTS  # tasks: n = patients
    units = {m["name"]: (m["unit"], m["kind"]) for m in doc["metrics"]}
    assert units == {PRIMARY: ("patient", "segmentation"), "sf_ratio.mae": ("patient", "task"),
                     "readmission_30d.auroc": ("patient", "task")}
    lines = render(doc, "markdown").splitlines()
    cells = [ln for ln in lines if ln.startswith("| ") and STRATEGY in ln]
    assert len(cells) == 1 and cells[0].count(" ? ") == len(METRIC_DEFS) and not {"▲", "▼"} & set(cells[0])
    assert any("? = untestable" in ln for ln in lines) and "? = untestable" in render(doc, "table")
    assert lines[-1].startswith("Cannot be tested in this run") and PRIMARY in lines[-1]  # the columns, named once


def test_the_leaderboard_marks_what_the_simulations_mark():
    results = simulate_run(np.random.default_rng(14), seeds=2, folds=3, model_sd=0.01, delta=0.1, tasks=True)
    doc = build_leaderboard(results)
    strategy = next(r for r in doc["rows"] if r["strategy"] == STRATEGY)
    run = RunStatistics(results)
    for d in METRIC_DEFS:
        assert strategy["comparison"][d.name]["mark"] == leaderboard_mark(run, d.name)
    assert strategy["comparison"][PRIMARY]["mark"] == MARK_BETTER and strategy["comparison"][PRIMARY]["models"] == 6


def test_a_large_task_improvement_is_detected():
    # Not an issue threshold: a check that the task test can see a difference at all (S/F errors halved,
    # readmission AUROC up by about 0.1), with 10 model pairs.
    rng = np.random.default_rng(15)
    better = {m: 0 for m in TASK_METRICS}
    for _ in range(40):
        run = RunStatistics(simulate_run(rng, seeds=2, folds=5, model_sd=0.01, tasks=True, task_gain=0.5))
        for metric in TASK_METRICS:
            better[metric] += leaderboard_mark(run, metric) == MARK_BETTER
    print(f"\ntask power at 2 seeds x 5 folds: { {m: v / 40 for m, v in better.items()} }")
    assert all(v / 40 >= MIN_POWER for v in better.values())


# ------------------------------------------------------------------------------------------- (b) power


def test_a_planted_difference_of_003_is_detected_in_at_least_80_percent():
    rng = np.random.default_rng(2)
    better = 0
    for _ in range(SIMULATIONS):
        results = simulate_run(rng, seeds=3, folds=5, model_sd=0.01, delta=0.03)
        better += leaderboard_mark(RunStatistics(results), PRIMARY) == MARK_BETTER
    print(f"\npower at delta 0.03, model SD 0.01, 3 seeds x 5 folds x {PATIENTS} patients: {better / SIMULATIONS:.3f}")
    assert better / SIMULATIONS >= MIN_POWER


# ----------------------------------------------------------------------- intervals include training noise


@pytest.mark.parametrize(("seeds", "folds"), [(1, 3), (3, 5)])
def test_segmentation_intervals_cover_the_population_mean(seeds, folds):
    rng = np.random.default_rng(30 + seeds)
    reps, hits, naive_hits = 200, 0, 0
    for _ in range(reps):
        results = simulate_run(rng, seeds=seeds, folds=folds, model_sd=0.02)
        run = RunStatistics(results, n_boot=1000)
        est, _ = run.estimate(BASELINE, PRIMARY)
        hits += est.ci_low <= 0.7 <= est.ci_high  # 0.7: the mean over patients and models of the simulation
        # The same bootstrap blind to the models (patients only) for contrast.
        values = run.cell_values(BASELINE, PRIMARY, results.seeds)
        blind = run.weights(np.zeros(values.shape, dtype=np.int64), None, 1000)
        flat = blind.reshape(len(blind), -1)
        means = (flat @ np.nan_to_num(values).ravel()) / (flat @ np.isfinite(values).ravel())
        low, high = np.quantile(means, [0.025, 0.975])
        naive_hits += low <= 0.7 <= high
    print(f"\n{seeds} seeds x {folds} folds, model SD 0.02: coverage {hits / reps:.3f} (patients only: "
          f"{naive_hits / reps:.3f})")
    # Binomial(200, 0.95) has sd 1.5%: 0.90 is three of them below the nominal level.
    assert hits / reps >= 0.90
    if seeds == 1:
        assert naive_hits / reps < 0.90  # with 3 models, ignoring them under-covers


# ---------------------------------------------------------------------------------- (c) task metrics


@pytest.mark.parametrize(("seeds", "folds"), [(2, 3), pytest.param(1, 10, marks=pytest.mark.slow),
                                               pytest.param(3, 5, marks=pytest.mark.slow)])
def test_task_comparisons_of_identical_procedures_are_calibrated(seeds, folds):
    rng = np.random.default_rng(40 + seeds)
    marked = {m: 0 for m in TASK_METRICS}
    for _ in range(SIMULATIONS):
        results = simulate_run(rng, seeds=seeds, folds=folds, model_sd=0.01, patients=40, tasks=True)
        run = RunStatistics(results)
        for metric in TASK_METRICS:
            marked[metric] += leaderboard_mark(run, metric) in (MARK_BETTER, MARK_WORSE)
    fpr = {m: v / SIMULATIONS for m, v in marked.items()}
    print(f"\ntask FPR, {seeds} seeds x {folds} folds: {fpr}")
    assert all(v <= MAX_FPR for v in fpr.values())


# ---------------------------------------------------------------------------------------- (d) DeLong


def delong_variance(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """AUROC and DeLong's variance (DeLong et al. 1988) by the fast midrank algorithm of Sun & Xu (2014)."""
    pos, neg = score[y == 1], score[y == 0]
    m, n = len(pos), len(neg)
    tx, ty, tz = sps.rankdata(pos), sps.rankdata(neg), sps.rankdata(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v01 = (tz[:m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[m:] - ty) / m  # ... and of the negatives
    return float(auc), float(np.var(v01, ddof=1) / m + np.var(v10, ddof=1) / n)


def test_auroc_interval_agrees_with_delong():
    rng = np.random.default_rng(5)
    n = 200
    y = (rng.random(n) < 0.3).astype(np.float64)
    score = rng.normal(0, 1, n) + 0.95 * y  # binormal, AUROC about 0.75
    patients = np.arange(n)
    results = RunResults(config={}, environment={}, metric_defs=[METRIC_DEFS[2]], frame_patient=patients,
                         rows=[LABELS_EXPERT], seeds=[0], references={LABELS_EXPERT}, reference_strategy=None)
    results.task_predictions[(LABELS_EXPERT, 0)] = {"readmission-30d": {
        "patient": patients, "y_true": y, "kind": "classification", "repeats": [score], "folds": [np.zeros(n, int)]}}
    results.task_metrics["readmission_30d.auroc"] = TaskMetric("readmission-30d", auroc)
    est, _ = RunStatistics(results).estimate(LABELS_EXPERT, "readmission_30d.auroc")
    auc, var = delong_variance(y, score)
    half = sps.norm.ppf(0.975) * np.sqrt(var)
    print(f"\nAUROC {auc:.3f}: bootstrap [{est.ci_low:.3f}, {est.ci_high:.3f}], DeLong [{auc - half:.3f}, {auc + half:.3f}]")
    assert est.mean == pytest.approx(auc) and est.n == n
    assert abs(est.ci_low - (auc - half)) <= DELONG_TOLERANCE
    assert abs(est.ci_high - (auc + half)) <= DELONG_TOLERANCE
