"""Speed of the leaderboard statistics (issue 9: 20 strategies x 5 seeds x 5 folds x 200 patients, every built-in
segmentation metric, in under 10 s).

The results have the runner's shape: several frames per patient, NaN frames, the fold of every frame, the
reference row with its ``true.*`` metrics at every seed and the per-repeat task values of every row. Timed by
the wall clock, as a user waits for ``lusbench leaderboard``; the best round counts.

    .venv/bin/pytest benchmarks/test_bench_stats.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from lusbench.data.folds import patient_folds
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import LABELS_EXPERT, RunResults
from lusbench.evaluate.segmetrics import segmentation_metric_defs
from lusbench.results.leaderboard import build_leaderboard

CLASSES = ("pleural_line", "a_lines", "b_lines", "consolidation", "effusion")
STRATEGIES, SEEDS, FOLDS, PATIENTS, FRAMES = 20, 5, 5, 200, 4
REPEATS = 5
MAX_SECONDS = 10.0


def leaderboard_results() -> RunResults:
    rng = np.random.default_rng(0)
    defs = segmentation_metric_defs(CLASSES, has_true_masks=True)
    tasks = [MetricDef("sf_ratio.mae", False, "S/F MAE"), MetricDef("readmission_30d.auroc", True, "AUROC")]
    frame_patient = np.repeat(np.arange(PATIENTS), FRAMES)
    n = len(frame_patient)
    strategies = [f"threshold:{0.3 + 0.02 * i:.2f}" for i in range(STRATEGIES)]
    results = RunResults(config={"seeds": list(range(SEEDS)), "folds": FOLDS}, environment={},
                         metric_defs=[*defs, *tasks], frame_patient=frame_patient, rows=[*strategies, LABELS_EXPERT],
                         seeds=list(range(SEEDS)), references={LABELS_EXPERT}, reference_strategy=strategies[10])
    true_names = [d.name for d in defs if d.name.startswith("true.")]
    reference = {name: rng.random(n) for name in true_names}
    for s in range(SEEDS):
        frame_fold = np.empty(n, dtype=np.int64)
        for f, frames in enumerate(patient_folds(frame_patient, FOLDS, s)):
            frame_fold[frames] = f
        results.seg[(LABELS_EXPERT, s)] = reference
        results.tasks[(LABELS_EXPERT, s)] = {d.name: rng.random(REPEATS).tolist() for d in tasks}
        for row in strategies:
            values = {d.name: rng.random(n) for d in defs}
            for v in values.values():
                v[rng.random(n) < 0.1] = np.nan
            results.seg[(row, s)] = values
            results.frame_fold[(row, s)] = frame_fold
            results.tasks[(row, s)] = {d.name: rng.random(REPEATS).tolist() for d in tasks}
    return results


@pytest.mark.benchmark(group="statistics")
def test_leaderboard_statistics(benchmark):
    results = leaderboard_results()
    doc = benchmark.pedantic(build_leaderboard, args=(results,), rounds=3, iterations=1, warmup_rounds=0)
    seconds = benchmark.stats.stats.min
    metrics = len(results.metric_defs)
    benchmark.extra_info.update({"strategies": STRATEGIES, "seeds": SEEDS, "folds": FOLDS, "patients": PATIENTS,
                                 "metrics": metrics, "seconds": round(seconds, 3)})
    print(f"\nstatistics of {STRATEGIES} strategies x {SEEDS} seeds x {FOLDS} folds x {PATIENTS} patients, "
          f"{metrics} metrics: {seconds:.2f} s")
    assert len(doc["rows"]) == STRATEGIES + 1
    assert doc["rows"][0]["comparison"]["dice"]["models"] == SEEDS * FOLDS
    assert seconds < MAX_SECONDS
