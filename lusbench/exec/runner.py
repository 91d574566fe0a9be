"""The runner: strategies x seeds x folds -> out-of-fold predictions -> metrics -> tasks -> leaderboard.

Every unit of work (one trained fold, one fold's evaluation, one task evaluation) is a record in the run
directory's :class:`~lusbench.results.store.ResultsStore` under the keys of :mod:`lusbench.results.keys`; a
unit whose record exists is never recomputed (unless ``force``), so an interrupted run resumes where it
stopped, adding a strategy trains only it, and a change that only evaluation sees retrains nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench.api.plugins import Plugins
from lusbench.data.folds import patient_folds
from lusbench.errors import UserError
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import LABELS_EXPERT, LABELS_TRUE
from lusbench.exec.cells import cell_base, warm_up, warm_up_config
from lusbench.exec.executors import Executor, create_executor
from lusbench.exec.grid import Grid
from lusbench.exec.plan import Made, Resolved, RunPlan, check_flags, resolve
from lusbench.results.collect import collect_results
from lusbench.results.keys import (
    MANIFEST,
    TRAINING_CODE,
    RunKeys,
    environment_info,
    evaluation_parts,
    lusbench_code,
    plugin_code,
    plugin_identity,
    reference_parts,
    runtime_parts,
    short_hash,
    task_parts,
    training_fields,
    training_parts,
)
from lusbench.results.store import ResultsStore, run_lock
from lusbench.train.strategy import check_servable

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset
    from lusbench.progress import Progress

__all__ = ["RunPlan", "run"]


def run(plan: RunPlan, plugins: Plugins, progress: Progress) -> dict[str, Any]:
    """Execute ``plan`` (resuming from the store) and return the leaderboard document it wrote."""
    try:
        return _run(plan, plugins, progress)
    except BaseException as exc:
        # A logger opened in run_started must hear that the run ended (Ctrl-C included); a no-op if the
        # run failed before run_started.
        plugins.notify_run_failed(exc)
        raise


def _run(plan: RunPlan, plugins: Plugins, progress: Progress) -> dict[str, Any]:
    train_config = check_flags(plan)
    # Before the dataset is built: a bad --executor (or an unreachable scheduler) fails in seconds. The workers start
    # warming up (imports, dataset) before the specs are resolved, because resolving imports the model's library in
    # the driver too: seconds that would otherwise come before any worker starts. A spec error stops the workers.
    with create_executor(plan.executor, plugins) as executor:
        executor.prepare(warm_up, warm_up_config(plugins, plan.dataset, plan.model, train_config.normalize, plan.device))
        resolved = resolve(plan, plugins)
        return _run_with(plan, plugins, progress, resolved, executor)


def _run_with(plan: RunPlan, plugins: Plugins, progress: Progress, resolved: Resolved, executor: Executor) -> dict[str, Any]:
    strategies = [s.obj for s in resolved.strategies]
    builder = resolved.model.obj
    dataset = plugins.datasets.create(plan.dataset)
    height, width = dataset.image_shape
    progress.note(f"dataset {dataset.name}: {dataset.n_frames} frames of {height}x{width}, "
                  f"{len(np.unique(dataset.patient))} patients")
    for strategy in strategies:
        check_servable(strategy, dataset)
    try:
        patient_folds(dataset.patient, plan.folds, 0)
    except ValueError as exc:
        raise UserError(f"--folds {plan.folds}: {exc}") from None
    if resolved.reference_added:
        progress.note(f"reference strategy {resolved.reference} is not among --strategy: training it too, to compare "
                      "with (--reference none skips the comparison)")
    runnable = []
    for task in resolved.tasks:
        reason = task.obj.skip_reason(dataset)
        if reason:
            progress.note(f"task {task.obj.name} skipped: {reason}")
        else:
            runnable.append(task)

    import torch

    from lusbench.train import engine as training

    train_config = resolved.train_config
    device = training.resolve_device(plan.device)
    # The thread count every cell trains with, wherever it runs: part of the training key (it changes the weights).
    threads = executor.cell_threads(plan.threads)
    if executor.in_process:
        torch.set_num_threads(threads)
    else:
        # The cores are the workers'. The driver only evaluates each cell as it arrives, and its default intra-op
        # threads (one per core) would take cycles from their training: under process:2 on 2 cores, a commit took
        # 0.85-0.94 s at one thread and 1.05-1.2 s at two.
        torch.set_num_threads(1)
    environment = {**environment_info(device, plugins), "torch_threads": threads, "executor": executor.name}
    # What the leaderboard describes, for `check` to compare like with like; the store's reuse is decided by
    # the record keys below, not by this hash.
    cell_config = {
        "dataset": dataset.name,
        "model": builder.name,
        "folds": plan.folds,
        "eval_threshold": plan.eval_threshold,
        "val_fraction": plan.val_fraction,
        "train": train_config.to_json(),
    }
    task_names = [t.obj.name for t in runnable]
    config = {
        **cell_config,
        "preset": plan.preset,
        "seeds": plan.seeds,
        "tasks": task_names,
        "config_hash": short_hash({"cell": short_hash(cell_config), "seeds": plan.seeds, "tasks": task_names}),
    }
    metric_defs = _metric_defs(dataset, [t.obj for t in runnable])
    primary = _primary_metric(plan, dataset, metric_defs)
    rows = [s.name for s in strategies] + [LABELS_EXPERT] + ([LABELS_TRUE] if dataset.true_masks is not None else [])
    keys = _record_keys(plan, dataset, resolved, runnable, train_config, device, threads)
    manifest = {
        "config": config,
        "environment": environment,
        "keys": keys,
        "rows": rows,
        "references": [LABELS_EXPERT, LABELS_TRUE],
        "reference_strategy": resolved.reference,
        "frame_patient": dataset.patient.tolist(),
        "classes": list(dataset.classes),
        "metric_defs": [m.to_json() for m in metric_defs],
        "primary_metric": primary,
        "sweeps": {s.name: sweep for s in strategies if (sweep := s.sweep()) is not None},
        "task_metrics": {t.obj.name: [m.name for m in t.obj.metric_defs()] for t in runnable},
    }
    # One run at a time per directory: a second one waits, then reuses what the first trained (lusbench/results/store.py).
    with run_lock(plan.run_dir, progress.note), ResultsStore(plan.run_dir) as store:
        if store.set_aside:
            progress.note(f"{store.run_dir}: {store.set_aside} records of an older lusbench (results schema 1) are not "
                          "reused: their keys cannot tell stale results from valid ones")
        plugins.notify("run_started", config=config, run_dir=plan.run_dir)
        store.set_meta(MANIFEST, manifest)
        base = cell_base(plugins, plan.dataset, dataset, plan.model, builder.name, train_config.to_json(), device.type,
                         threads)
        grid = Grid(plan, dataset, builder, strategies, [t.obj for t in runnable], train_config, device, environment,
                    RunKeys.of(manifest), keys["parts"], store, progress, executor, plugins, base)
        grid.run_cells()
        grid.run_tasks()
        results = collect_results(store, manifest)

        from lusbench.results.document import LEADERBOARD_FILE, write_leaderboard
        from lusbench.results.leaderboard import build_leaderboard

        doc = build_leaderboard(results)
        # Inside the lock: a waiting run's leaderboard comes after this one's, never interleaved with it.
        write_leaderboard(doc, plan.run_dir / LEADERBOARD_FILE)
    plugins.notify("run_finished", leaderboard=doc, run_dir=plan.run_dir)
    return doc


def _record_keys(plan: RunPlan, dataset: LUSDataset, resolved: Resolved, tasks: list[Made], train_config: Any,
                 device: Any, threads: int) -> dict[str, Any]:
    """The manifest's ``keys``: a training key per row, the evaluation key, a key per task, and under ``parts``
    what each was hashed from (stored with every record, so a retrained fold can say what changed)."""
    code = lusbench_code(TRAINING_CODE)
    data_code = plugin_code(dataset)
    data = {fields: dataset.content_hash(fields) for fields in {training_fields(s.obj) for s in resolved.strategies}}
    model = plugin_identity(resolved.model.obj, resolved.model.factory)
    settings = {**train_config.to_json(), "folds": plan.folds, "val_fraction": plan.val_fraction}
    runtime = runtime_parts(device, train_config.amp, threads)
    train = {s.obj.name: training_parts(data[training_fields(s.obj)], data_code, model, plugin_identity(s.obj, s.factory),
                                        settings, runtime, code) for s in resolved.strategies}
    train.update({row: reference_parts(row, code) for row in (LABELS_EXPERT, LABELS_TRUE)})
    evaluation = evaluation_parts(dataset, data_code, plan.eval_threshold)
    evaluation_key = short_hash(evaluation)
    task_keys = {t.obj.name: task_parts(evaluation_key, plugin_identity(t.obj, t.factory)) for t in tasks}
    return {
        "train": {row: short_hash(parts) for row, parts in train.items()},
        "evaluation": evaluation_key,
        "tasks": {name: short_hash(parts) for name, parts in task_keys.items()},
        "parts": {"train": train, "evaluation": evaluation, "tasks": task_keys},
    }


def _primary_metric(plan: RunPlan, dataset: LUSDataset, defs: list[MetricDef]) -> str:
    """``--primary-metric`` if given (checked against the run's metrics), else the dataset's: one no strategy
    trains on (:func:`lusbench.evaluate.segmetrics.primary_metric`)."""
    from lusbench.evaluate.segmetrics import primary_metric

    if plan.primary_metric is None:
        return primary_metric(dataset.true_masks is not None, dataset.rater_masks is not None)
    names = [d.name for d in defs]
    if plan.primary_metric not in names:
        raise UserError(f"--primary-metric {plan.primary_metric}: not a metric of this run (choose from "
                        f"{', '.join(n for n in names if n.count('.') <= 1)})")
    return plan.primary_metric


def _metric_defs(dataset: LUSDataset, tasks: list[Any]) -> list[MetricDef]:
    from lusbench.evaluate.segmetrics import segmentation_metric_defs

    defs = segmentation_metric_defs(dataset.classes, dataset.true_masks is not None, dataset.rater_masks is not None)
    for task in tasks:
        defs.extend(task.metric_defs())
    return defs


