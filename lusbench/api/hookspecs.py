"""The hooks a lusbench plugin can implement: every hook here is a documented contract.

A plugin is a module (usually named by an entry point in the ``lusbench`` group) that defines
functions named after these hooks and decorated with :data:`lusbench.hookimpl`. The built-in
plugins in ``lusbench_builtins`` are written exactly this way.

Registration hooks receive a ``register(name, factory)`` callable. ``name`` is what a spec string
selects (``threshold`` in ``threshold:0.6``); ``factory`` is called with the spec's arguments as
strings (plain ``a`` positionally, ``k=v`` as keywords) and raises :class:`ValueError` for bad
arguments. Names are unique across all plugins. Registration must stay cheap: import heavy
libraries (torch, smp, sklearn) inside factories and methods, never at module import, so that
``lusbench plugins`` and ``lusbench --help`` stay instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

hookspec = pluggy.HookspecMarker("lusbench")
hookimpl = pluggy.HookimplMarker("lusbench")

Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_label_strategies(register: Register) -> None:
    """Register label strategies: ways of turning per-pixel expert confidence into training targets.

    Call ``register(name, factory)`` once per strategy. The factory receives the spec's arguments
    as strings and returns a :class:`lusbench.LabelStrategy` whose ``name`` is the canonical spec
    (``"threshold:0.6"``). Selected with ``--strategy name`` or ``--strategy name:a,b``.

    Example::

        @lusbench.hookimpl
        def register_label_strategies(register):
            register("threshold", ThresholdStrategy)
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    Call ``register(name, factory)``; the factory receives the spec's arguments as strings and
    returns a :class:`lusbench.LUSDataset` (everything in memory, compact dtypes). Selected with
    ``--dataset name`` or ``--dataset name:k=v,...`` (e.g. ``synthetic-lus:patients=40,size=64``).
    A factory raises :class:`ValueError` naming the bad argument, or the file that is malformed.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register segmentation models.

    Call ``register(name, factory)``; the factory receives the spec's arguments as strings and
    returns a :class:`lusbench.ModelBuilder` whose ``build(in_channels, classes)`` makes a fresh
    ``torch.nn.Module`` mapping ``(B, in_channels, H, W)`` images to ``(B, classes, H, W)``
    logits (one sigmoid channel per class). Selected with ``--model name`` or ``--model name:arg``.
    """


@hookspec
def register_downstream_tasks(register: Register) -> None:
    """Register downstream clinical tasks fed by features of the segmentations.

    Call ``register(name, factory)``; the factory receives the spec's arguments as strings and
    returns a :class:`lusbench.DownstreamTask`. Its metrics appear on the leaderboard as
    ``<prefix>.<metric>`` (e.g. ``sf_ratio.mae``). Selected with ``--task name``; every
    registered task runs when no ``--task`` is given.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register executors: engines that run the cells of a grid (strategies x seeds x folds), e.g. on Ray.

    Call ``register(name, factory)``; the factory receives the spec's arguments as strings and returns a
    :class:`lusbench.Executor` whose ``map(fn, cells)`` calls ``fn`` on every cell configuration (a plain dict)
    wherever the engine runs work and yields each result as soon as it is done, in any order; ``fn`` is pure
    and picklable, so a cell may be rerun after a lost worker. Workers need lusbench and the run's plugins
    installed. Only the driver writes the results store. ``local``, ``process`` and ``dask`` are built in and
    cannot be registered again. Selected with ``--executor name`` or ``--executor name:arg``.
    """


@hookspec
def run_started(config: dict[str, Any], run_dir: Path) -> None:
    """Event: a ``lusbench run`` is about to train and evaluate.

    ``config`` is the run's configuration as it appears in the leaderboard JSON (``config``
    section); ``run_dir`` is the output directory. Loggers (MLflow, W&B) hook in here. The return
    value is ignored; an exception aborts the run.
    """


@hookspec
def run_finished(leaderboard: dict[str, Any], run_dir: Path) -> None:
    """Event: a ``lusbench run`` finished and its leaderboard was written.

    ``leaderboard`` is the leaderboard JSON document (docs/leaderboard.md) that was written to ``run_dir``.
    The return value is ignored.
    """


@hookspec
def run_failed(config: dict[str, Any], run_dir: Path, error: str) -> None:
    """Event: a ``lusbench run`` failed after :func:`run_started` was called (any exception, Ctrl-C included).

    ``config`` and ``run_dir`` are what ``run_started`` received; ``error`` is a one-line summary of the
    exception (``"UserError: --model 'x' cannot segment 64x64 images: ..."``). A logger opened in
    ``run_started`` closes here, marking the experiment failed. Called at most once per run, never after
    ``run_finished``; also called when another plugin's ``run_started`` raised, so an implementation must
    tolerate a run it did not open. The return value is ignored; an exception in it is reported as a
    warning and the run's own error stays the one reported.
    """
