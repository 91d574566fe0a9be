"""What to run: the plan merged from presets and flags, and its specs resolved against the registries.

Everything here is cheap and runs before any heavy work, so a typo fails in a second, not after training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lusbench.api.plugins import Plugins
from lusbench.api.registry import FLAGS, Registry
from lusbench.api.specs import parse_spec
from lusbench.errors import PluginError, UserError
from lusbench.train.config import TrainConfig


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
    primary_metric: str | None = None  # None: the dataset's (lusbench.evaluate.segmetrics.primary_metric)
    threads: int | None = None  # torch intra-op threads per cell; None: the executor's default (cell_threads)
    executor: str = "local"  # --executor: where the cells run (lusbench.exec.executors)


class Made(NamedTuple):
    """A plugin object and the factory that made it: the source of both is part of the record keys
    (:func:`lusbench.results.keys.plugin_code`)."""

    obj: Any
    factory: Callable[..., Any]


@dataclass(frozen=True)
class Resolved:
    """The run's plugin objects, resolved from the plan's specs. ``reference_added``: the reference strategy was
    not among ``--strategy``, so it was added (first) to ``strategies`` to be trained and compared with."""

    strategies: list[Made]
    reference: str | None
    tasks: list[Made]
    model: Made
    train_config: TrainConfig
    reference_added: bool = False


def check_flags(plan: RunPlan) -> TrainConfig:
    """The plan's numeric flags checked and its training settings made (no plugin called, nothing imported)."""
    if not 0 < plan.eval_threshold <= 1:
        raise UserError(f"--eval-threshold must be in (0, 1], got {plan.eval_threshold}")
    if plan.folds < 2:
        raise UserError(f"--folds must be at least 2, got {plan.folds}")
    try:
        return TrainConfig(**plan.train)  # refused now, not after the dataset is built
    except TypeError as exc:
        raise UserError(f"training settings: {exc}") from None


def resolve(plan: RunPlan, plugins: Plugins) -> Resolved:
    """Check the flags and resolve every spec (the model last: it may import smp) before any heavy work,
    so a typo fails in a second, not after training."""
    from lusbench.evaluate.tasks import DownstreamTask
    from lusbench.train.models import ModelBuilder
    from lusbench.train.strategy import LabelStrategy

    train_config = check_flags(plan)
    # A sweep A..B/STEP stands for several strategies; errors in one of them name the sweep it came from.
    strategies = [_make(plugins.strategies, spec, LabelStrategy, label)
                  for text in plan.strategies for spec, label in plugins.strategies.expand(text)]
    names = [s.obj.name for s in strategies]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"--strategy given twice: {', '.join(duplicates)}")
    reference, added = None, False
    if plan.reference:
        made = _make(plugins.strategies, plan.reference, LabelStrategy, "--reference")
        reference = made.obj.name
        if reference not in names:
            # A run that compares nothing answers nothing: the reference is trained too (first, as the row the
            # others are read against); --reference none opts out.
            strategies, added = [made, *strategies], True
    task_specs = plan.tasks if plan.tasks is not None else plugins.tasks.names()
    tasks = [_make(plugins.tasks, spec, DownstreamTask) for spec in task_specs]
    owners: dict[str, str] = {}
    for metric, task_name in [(m.name, t.obj.name) for t in tasks for m in t.obj.metric_defs()]:
        if metric in owners:
            raise UserError(f"--task {owners[metric]} and --task {task_name} both report '{metric}'")
        owners[metric] = task_name
    return Resolved(strategies, reference, tasks, _make(plugins.models, plan.model, ModelBuilder), train_config, added)


def _make(registry: Registry, spec: str, base: type, label: str | None = None) -> Made:
    """Create ``spec``'s object; a PluginError naming the plugin if the object has no name of its own."""
    obj = registry.create(spec, label)
    entry = {e.name: e for e in registry.entries()}[parse_spec(spec).name]
    if not _has_own_name(obj, base):
        # Results are keyed and shown by name: two plugins inheriting the base class's name would share records.
        raise PluginError(f"plugin '{entry.plugin}': {label or FLAGS[registry.kind]} '{spec}' made a "
                          f"{type(obj).__name__} without a name of its own (name {getattr(obj, 'name', None)!r}; "
                          f"{base.__name__}.name is only a default); set its name to its canonical spec, e.g. '{spec}'")
    return Made(obj, entry.factory)


def _has_own_name(obj: Any, base: type) -> bool:
    """A non-empty string ``name``, set on the object or by a class below ``base`` (not inherited from it)."""
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.strip():
        return False
    if not isinstance(obj, base) or "name" in getattr(obj, "__dict__", {}):
        return True
    return any("name" in vars(cls) for cls in type(obj).__mro__ if cls is not base and issubclass(cls, base))
