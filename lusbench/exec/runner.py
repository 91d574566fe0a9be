"""The runner: strategies x seeds x folds -> out-of-fold predictions -> metrics -> tasks -> leaderboard.

Every unit of work (one trained fold, one task evaluation) is a record in the run directory's
:class:`~lusbench.results.store.ResultsStore`; a unit whose record exists is never recomputed (unless
``force``), so an interrupted run resumes where it stopped and adding a strategy trains only it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench.api.plugins import Plugins
from lusbench.data.folds import patient_folds
from lusbench.errors import UserError
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import REFERENCE_EXPERT, REFERENCE_TRUE
from lusbench.exec.grid import Grid
from lusbench.exec.plan import RunPlan, resolve
from lusbench.results.collect import collect_results
from lusbench.results.keys import MANIFEST, RunKeys, environment_info, short_hash
from lusbench.results.store import ResultsStore

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
    strategies, reference, tasks, builder = resolve(plan, plugins)
    names = [s.name for s in strategies]
    dataset = plugins.datasets.create(plan.dataset)
    height, width = dataset.image_shape
    progress.note(f"dataset {dataset.name}: {dataset.n_frames} frames of {height}x{width}, "
                  f"{len(np.unique(dataset.patient))} patients")
    try:
        patient_folds(dataset.patient, plan.folds, 0)
    except ValueError as exc:
        raise UserError(f"--folds {plan.folds}: {exc}") from None
    runnable = []
    for task in tasks:
        reason = task.skip_reason(dataset)
        if reason:
            progress.note(f"task {task.name} skipped: {reason}")
        else:
            runnable.append(task)

    from lusbench.train import engine as training

    try:
        train_config = training.TrainConfig(**plan.train)
    except TypeError as exc:
        raise UserError(f"training settings: {exc}") from None
    device = training.resolve_device(plan.device)
    environment = environment_info(device, plugins)
    env_key = short_hash({k: environment[k] for k in ("lusbench", "torch", "device", "code")})
    cell_config = {
        "dataset": dataset.name,
        "model": builder.name,
        "folds": plan.folds,
        "eval_threshold": plan.eval_threshold,
        "val_fraction": plan.val_fraction,
        "train": train_config.to_json(),
    }
    cell_hash = short_hash(cell_config)
    config = {
        **cell_config,
        "preset": plan.preset,
        "seeds": plan.seeds,
        "tasks": [t.name for t in runnable],
        "config_hash": short_hash({"cell": cell_hash, "seeds": plan.seeds, "tasks": [t.name for t in runnable]}),
    }
    rows = names + [REFERENCE_EXPERT] + ([REFERENCE_TRUE] if dataset.true_masks is not None else [])
    manifest = {
        "config": config,
        "environment": environment,
        "cell_hash": cell_hash,
        "env_key": env_key,
        "rows": rows,
        "references": [REFERENCE_EXPERT, REFERENCE_TRUE],
        "reference_strategy": reference,
        "frame_patient": dataset.patient.tolist(),
        "classes": list(dataset.classes),
        "metric_defs": [m.to_json() for m in _metric_defs(dataset, runnable)],
    }
    with ResultsStore(plan.run_dir) as store:
        plugins.notify("run_started", config=config, run_dir=plan.run_dir)
        store.set_meta(MANIFEST, manifest)
        grid = Grid(plan, dataset, builder, strategies, runnable, train_config, device, environment, RunKeys.of(manifest),
                     store, progress)
        grid.run_cells()
        grid.run_tasks()
        results = collect_results(store, manifest)

    from lusbench.results.document import LEADERBOARD_FILE, write_leaderboard
    from lusbench.results.leaderboard import build_leaderboard

    doc = build_leaderboard(results)
    write_leaderboard(doc, plan.run_dir / LEADERBOARD_FILE)
    plugins.notify("run_finished", leaderboard=doc, run_dir=plan.run_dir)
    return doc


def _metric_defs(dataset: LUSDataset, tasks: list[Any]) -> list[MetricDef]:
    from lusbench.evaluate.segmetrics import segmentation_metric_defs

    defs = segmentation_metric_defs(dataset.classes, dataset.true_masks is not None)
    for task in tasks:
        defs.extend(task.metric_defs())
    return defs


