"""The leaderboard document (field by field in docs/leaderboard.md), built from a run's results.

``build_leaderboard`` turns a :class:`RunResults` into a JSON-safe dict; everything downstream (the
renderings in :mod:`lusbench.results.render`, the HTML report, ``lusbench check``) reads only that dict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError
from lusbench.results.document import LEADERBOARD_FILE, SCHEMA, json_safe, read_leaderboard

if TYPE_CHECKING:
    from lusbench.evaluate.run_results import RunResults


def build_leaderboard(results: RunResults, reference: str | None = None, primary_metric: str | None = None) -> dict[str, Any]:
    """The leaderboard document of ``results``; ``reference`` overrides ``results.reference_strategy`` and
    ``primary_metric`` overrides ``results.primary_metric``.

    Raises ValueError when the requested reference strategy is a label row (those are context, never
    compared with), or the primary metric is not one of the run's metrics.
    """
    from lusbench.evaluate import stats

    ref = reference if reference is not None else results.reference_strategy
    if ref is not None and ref in results.references:
        raise ValueError(f"{ref} is a label row, not a strategy; it cannot be the reference strategy")
    run = stats.RunStatistics(results)
    defs = results.metric_defs
    primary = primary_metric or results.primary_metric
    if primary is not None and primary not in {d.name for d in defs}:
        raise ValueError(f"primary metric {primary} is not a metric of this run")
    strategies = [r for r in results.rows if r not in results.references]
    compared = ref is not None and ref in results.rows
    if ref is None:
        note = "no reference strategy: no paired comparison"
    elif not compared:
        note = f"reference strategy {ref} is not in this run: no paired comparison"
    else:
        note = None

    rows: list[dict[str, Any]] = []
    for row in results.rows:
        metrics = {}
        for d in defs:
            est, n_seeds = run.estimate(row, d.name)
            metrics[d.name] = {"mean": est.mean, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n, "seeds": n_seeds,
                               "models": est.models}
        seeds = sorted({s for (r, s) in (*results.seg, *results.tasks) if r == row})
        rows.append({"strategy": row, "label_row": row in results.references, "seeds": seeds, "metrics": metrics,
                     "comparison": {}, "rank": {}, **({"sweep": results.sweeps[row]} if row in results.sweeps else {})})
    by_name = {r["strategy"]: r for r in rows}

    for d in defs:
        ranks = stats.competition_ranks({r: by_name[r]["metrics"][d.name]["mean"] for r in strategies}, d.higher_is_better)
        for r in strategies:
            by_name[r]["rank"][d.name] = ranks[r]
        if not compared:
            continue
        others = [r for r in strategies if r != ref]
        tests = [run.compare(r, ref, d.name) for r in others]
        # Untestable comparisons have no p-value, so they take no share of the Holm family.
        adjusted = stats.holm_adjust([t.p_value for t in tests])
        for r, t, p_holm in zip(others, tests, adjusted, strict=True):
            by_name[r]["comparison"][d.name] = {
                "delta": t.delta, "p_value": t.p_value, "p_holm": p_holm, "n": t.n, "models": t.models,
                "mark": stats.significance_mark(t.delta, p_holm, d.higher_is_better, models=t.models),
            }

    return json_safe({
        "schema": SCHEMA,
        "config": results.config,
        "environment": results.environment,
        "metrics": [{**d.to_json(), "unit": run.unit[d.name], "kind": run.kind[d.name]} for d in defs],
        "primary_metric": primary,
        "reference_strategy": ref,
        "comparison_note": note,
        "statistics": {
            "ci_level": stats.CI_LEVEL, "alpha": stats.ALPHA,
            "bootstrap_samples": stats.N_BOOTSTRAP, "task_bootstrap_samples": stats.N_TASK_BOOTSTRAP,
            "permutations": stats.N_PERMUTATIONS, "exact_permutation_max_n": stats.EXACT_PERMUTATION_MAX_N,
            "min_model_pairs": stats.MIN_MODEL_PAIRS, "random_seed": stats.RANDOM_SEED,
            "patient_ci": "percentile bootstrap resampling the trained models of each seed and the patients",
            "seed_repeat_ci": "Student t over seeds x CV repeats (tasks without stored predictions)",
            "test": "two-sided sign-flip permutation test over (seed, fold) model pairs (segmentation); permutation "
                    "trading the two rows' task predictions of whole model pairs (tasks with stored predictions); "
                    "sign-flip over seeds x CV repeats (other tasks)",
            "untestable": f"fewer than {stats.MIN_MODEL_PAIRS} (seed, fold) model pairs behind the comparison",
            "adjustment": "Holm over the strategies compared on one metric",
        },
        "rows": rows,
        "folds": trained_folds(results),
        "calibration": pooled_calibration(results),
    })


def trained_folds(results: RunResults) -> list[dict[str, Any]]:
    """How every fold trained (best epoch, epochs run, stop reason, degenerate classes), for ``leaderboard --folds``."""
    return [{"strategy": row, "seed": seed, "fold": fold, **info}
            for (row, seed, fold), info in sorted(results.trained_folds.items(), key=lambda kv: (
                results.rows.index(kv[0][0]) if kv[0][0] in results.rows else len(results.rows), kv[0][1], kv[0][2]))]


def pooled_calibration(results: RunResults) -> dict[str, dict[str, list[float]]]:
    """Reliability bins per row, pooled over seeds."""
    from lusbench.evaluate.run_results import pool_calibration

    pooled: dict[str, dict[str, list[float]]] = {}
    for row in results.rows:
        bins = [results.calibration[(row, s)] for s in results.seeds if (row, s) in results.calibration]
        if bins:
            pooled[row] = pool_calibration(bins)
    return json_safe(pooled)


def load_run_leaderboard(run_dir: str | os.PathLike[str], reference: str | None = None,
                         primary_metric: str | None = None) -> dict[str, Any]:
    """The leaderboard of the run in ``run_dir``, rebuilt from its results store without retraining.

    A directory with only a ``leaderboard.json`` (say, a CI artifact) is read as stored; recomputing its
    paired tests against another ``reference`` would need the per-patient values only the store holds (another
    ``primary_metric`` only reorders, so it works on a stored document too). UserError (exit 2) for a missing
    run, a ``reference`` that is not a strategy of the run, or a primary metric the run does not have.
    """
    from lusbench.results.store import DB_NAME

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist (run `lusbench run` first, or pass --out DIR)")
    if (run_dir / DB_NAME).exists():
        from lusbench.results.collect import load_results

        results = load_results(run_dir)
        if reference is not None and reference not in results.rows:
            raise UserError(f"--reference {reference} is not a row of this run: {', '.join(results.rows)}")
        try:
            return build_leaderboard(results, reference, primary_metric)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    doc = read_leaderboard(run_dir / LEADERBOARD_FILE)
    if reference is not None and reference != doc.get("reference_strategy"):
        raise UserError(f"--reference {reference}: {run_dir} has no results store ({DB_NAME}) to recompute the paired "
                        f"tests; its {LEADERBOARD_FILE} compares with {doc.get('reference_strategy')} only")
    if primary_metric is not None:
        if primary_metric not in {m["name"] for m in doc["metrics"]}:
            raise UserError(f"primary metric {primary_metric} is not a metric of this run")
        doc["primary_metric"] = primary_metric
    return doc


