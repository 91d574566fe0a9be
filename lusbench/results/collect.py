"""Reading a run back from its store: the results of the last run in a directory, and its trained models.

Nothing here trains: the leaderboard, ``check`` and the report are rebuilt from these records.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench.errors import UserError
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import RunResults, pool_calibration
from lusbench.evaluate.task_scores import STANDARD_SCORES, task_metric
from lusbench.results.keys import MANIFEST, RunKeys
from lusbench.results.store import RecordKey, ResultsStore

if TYPE_CHECKING:
    import torch

    from lusbench.api.plugins import Plugins


def collect_results(store: ResultsStore, manifest: dict[str, Any]) -> RunResults:
    """Assemble :class:`RunResults` for the run described by ``manifest`` from the store's records."""
    config = manifest["config"]
    keys = RunKeys.of(manifest)
    # Which task reported each metric: the metric's predictions are stored under that task.
    task_of = {name: task for task, names in (manifest.get("task_metrics") or {}).items() for name in names}
    n_frames = len(manifest["frame_patient"])
    results = RunResults(
        config=config,
        environment=manifest["environment"],
        metric_defs=[MetricDef(**m) for m in manifest["metric_defs"]],
        frame_patient=np.asarray(manifest["frame_patient"]),
        rows=[],
        seeds=list(config["seeds"]),
        references=set(manifest["references"]),
        reference_strategy=manifest["reference_strategy"],
        primary_metric=manifest.get("primary_metric"),
        sweeps=manifest.get("sweeps") or {},
    )
    # Task metrics that name a standard score are recomputed from the stored per-patient predictions.
    for d in results.metric_defs:
        if d.score in STANDARD_SCORES and d.name in task_of:
            results.task_metrics[d.name] = task_metric(task_of[d.name], d.score)
    for row in manifest["rows"]:
        present = False
        for seed in config["seeds"]:
            if row not in results.references:
                for fold in range(config["folds"]):
                    record = store.get(keys.trained(row, seed, fold))
                    if record is not None:
                        results.trained_folds[(row, seed, fold)] = {
                            k: record.get(k) for k in ("best_epoch", "epochs_run", "stop_reason", "degenerate")}
            folds = [(seed, f) for f in range(config["folds"])] if row not in results.references else [(-1, -1)]
            seg = _collect_segmentation(store, keys, row, folds, n_frames)
            if seg is not None:
                metrics, calibration, frame_fold = seg
                results.seg[(row, seed)] = metrics
                if calibration is not None:
                    results.calibration[(row, seed)] = calibration
                if row not in results.references:
                    results.frame_fold[(row, seed)] = frame_fold
                present = True
            task_metrics: dict[str, list[float]] = {}
            for task in config["tasks"]:
                record = store.get(keys.task(row, seed, task))
                if record is not None:
                    task_metrics.update(record["metrics"])
                    if record.get("predictions") is not None:
                        results.task_predictions.setdefault((row, seed), {})[task] = record["predictions"]
            if task_metrics:
                results.tasks[(row, seed)] = task_metrics
                present = True
        if present:
            results.rows.append(row)
    return results


def _collect_segmentation(store: ResultsStore, keys: RunKeys, row: str, folds: list[tuple[int, int]], n_frames: int
                          ) -> tuple[dict[str, np.ndarray], dict[str, list[float]] | None, np.ndarray] | None:
    """Per-frame metrics, pooled calibration bins and the fold that predicted each frame (-1: none)."""
    records = [store.get(keys.cell(row, seed, fold)) for seed, fold in folds]
    if any(r is None for r in records):
        return None
    metrics: dict[str, np.ndarray] = {}
    frame_fold = np.full(n_frames, -1, dtype=np.int64)
    for (_, fold), record in zip(folds, records, strict=True):
        frames = np.asarray(record["frames"], dtype=np.int64)
        frame_fold[frames] = fold
        for name, values in record["metrics"].items():
            metrics.setdefault(name, np.full(n_frames, np.nan))[frames] = np.asarray(values, dtype=np.float64)
    calibrations = [r["calibration"] for r in records if "calibration" in r]
    return metrics, (pool_calibration(calibrations) if calibrations else None), frame_fold


def read_manifest(store: ResultsStore) -> dict[str, Any]:
    """The description of the last run in ``store`` (written when it started)."""
    manifest = store.get_meta(MANIFEST)
    if manifest is None:
        raise UserError(f"'{store.run_dir}' holds no run configuration")
    return manifest


def live_keys(manifest: dict[str, Any]) -> set[RecordKey]:
    """Every record key the run described by ``manifest`` reads (trained folds, their evaluations, the label rows'
    scores, the tasks): what ``lusbench store prune`` keeps."""
    keys, config = RunKeys.of(manifest), manifest["config"]
    labels = set(manifest["references"])
    out: set[RecordKey] = set()
    for row in manifest["rows"]:
        if row in labels:
            out.add(keys.cell(row, -1, -1))
        else:
            out.update(k for seed in config["seeds"] for fold in range(config["folds"])
                       for k in (keys.trained(row, seed, fold), keys.cell(row, seed, fold)))
        out.update(keys.task(row, seed, task) for seed in config["seeds"] for task in config["tasks"])
    return out


def fold_record_key(manifest: dict[str, Any], strategy: str, seed: int, fold: int) -> RecordKey:
    """The store key of one trained fold of the run described by ``manifest``."""
    return RunKeys.of(manifest).cell(strategy, seed, fold)


def load_results(run_dir: Path) -> RunResults:
    """The results of the last run in ``run_dir``, rebuilt from its store without retraining."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").exists():
        raise UserError(f"no lusbench run in '{run_dir}' (no results.sqlite; run `lusbench run --out {run_dir}` first)")
    with ResultsStore(run_dir, readonly=True) as store:
        return collect_results(store, read_manifest(store))


def load_fold_model(run_dir: Path, strategy: str, seed: int, fold: int, plugins: Plugins) -> torch.nn.Module:
    """The model trained for ``strategy`` at ``seed`` and ``fold`` in the last run of ``run_dir``, in eval mode."""
    from lusbench.train.checkpoints import load_checkpoint

    with ResultsStore(run_dir, readonly=True) as store:
        manifest = read_manifest(store)
        key = fold_record_key(manifest, strategy, seed, fold)
        path = store.artifact_path(key, ".pt")
        if store.get(key) is None or not path.exists():
            raise UserError(f"no checkpoint of {strategy} seed {seed} fold {fold} in {run_dir}")
    model = plugins.models.create(manifest["config"]["model"]).build(1, len(manifest["classes"]))
    return load_checkpoint(model, path)
