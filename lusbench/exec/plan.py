"""What to run: the plan merged from presets and flags, and its specs resolved against the registries.

Everything here is cheap and runs before any heavy work, so a typo fails in a second, not after training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lusbench.api.plugins import Plugins
from lusbench.errors import UserError


@dataclass
class RunPlan:
    """What to run, after presets and flags are merged (see ``lusbench run --help``)."""

    strategies: list[str]
    dataset: str
    model: str
    tasks: list[str] | None  # None: every registered task
    preset: str
    seeds: list[int]
    folds: int
    train: dict[str, Any]
    val_fraction: float
    eval_threshold: float
    device: str
    run_dir: Path
    reference: str | None
    force: bool = False


def resolve(plan: RunPlan, plugins: Plugins) -> tuple[list[Any], str | None, list[Any], Any]:
    """Check the flags and resolve every spec (the model last: it may import smp) before any heavy work,
    so a typo fails in a second, not after training. Returns strategies, reference name, tasks, model."""
    if not 0 < plan.eval_threshold <= 1:
        raise UserError(f"--eval-threshold must be in (0, 1], got {plan.eval_threshold}")
    if plan.folds < 2:
        raise UserError(f"--folds must be at least 2, got {plan.folds}")
    strategies = [plugins.strategies.create(spec) for spec in plan.strategies]
    names = [s.name for s in strategies]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"--strategy given twice: {', '.join(duplicates)}")
    reference = plugins.strategies.create(plan.reference, label="--reference").name if plan.reference else None
    task_specs = plan.tasks if plan.tasks is not None else plugins.tasks.names()
    tasks = [plugins.tasks.create(spec) for spec in task_specs]
    owners: dict[str, str] = {}
    for metric, task_name in [(m.name, t.name) for t in tasks for m in t.metric_defs()]:
        if metric in owners:
            raise UserError(f"--task {owners[metric]} and --task {task_name} both report '{metric}'")
        owners[metric] = task_name
    return strategies, reference, tasks, plugins.models.create(plan.model)


