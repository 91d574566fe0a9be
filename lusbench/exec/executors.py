"""Executors: where the cells of a grid run. ``local`` (in the driver's process), ``process[:N]`` (a pool of N
worker processes on this machine), ``dask[:ADDRESS]`` (Dask distributed: a LocalCluster on 127.0.0.1, or the
scheduler at ADDRESS), and any an outside plugin registers through the ``register_executors`` hook.

Every executor does one thing, :meth:`Executor.map`: call ``fn`` (:func:`lusbench.exec.cells.run_cell`) on every
cell configuration and yield each result as soon as it is done, in any order. The driver commits each result to the
results store as it arrives, so progress and resume are the same whatever runs the cells (docs/executors.md).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lusbench.errors import PluginError, UserError

if TYPE_CHECKING:
    from lusbench.api.plugins import Plugins

CellFn = Callable[[dict[str, Any]], dict[str, Any]]
DEFAULT_EXECUTOR = "local"


def cpu_cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Executor:
    """Runs the cells of a grid (subclass it to add an engine; see docs/executors.md).

    ``name`` is the executor's canonical spec (``process:2``). ``workers`` is how many cells run at once, from
    which :meth:`cell_threads` derives the torch threads each cell trains with so that the workers together do
    not oversubscribe the cores. ``in_process`` executors run cells in the driver's own process and so can show
    per-epoch progress and reuse the driver's dataset.
    """

    name = "executor"
    workers = 1
    in_process = False

    def cell_threads(self, requested: int | None) -> int:
        """Torch intra-op threads per cell: ``requested`` (``--threads``) if given, else the cores shared out."""
        return requested if requested is not None else max(1, cpu_cores() // self.workers)

    def prepare(self, warm_up: Callable[[dict[str, Any]], None], config: dict[str, Any]) -> None:
        """Optional: start the workers now and have each call ``warm_up(config)`` (load the plugins, build the
        dataset, import the model's library), while the driver prepares the run. Errors of ``warm_up`` are ignored
        here: the cells meet them again and report them."""

    def map(self, fn: CellFn, cells: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Run ``fn(cell)`` for every cell, wherever the engine runs work, and yield each result as it finishes.

        ``fn`` is a module-level function (picklable by reference) and each cell a plain dict; a cell may be run
        again (after a lost worker): ``fn`` is pure. An exception of ``fn`` is raised here, in the driver. When the
        consumer stops early (an error, Ctrl-C) the generator is closed: cancel what is still queued.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release workers and connections; called once, after the last cell (or on an error)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Cells one after another in the driver's process (the torch thread count is the driver's)."""

    name = "local"
    in_process = True

    def cell_threads(self, requested: int | None) -> int:
        import torch

        return requested if requested is not None else torch.get_num_threads()

    def map(self, fn: CellFn, cells: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for cell in cells:
            yield fn(cell)


def _positive(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got '{text}'")
    return value


def _init_worker() -> None:
    # Before torch is imported in the worker: cuBLAS reads it when its first handle is created.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _init_pool_worker(sys_path: list[str], environ: dict[str, str]) -> None:
    # A worker forked from the fork server has the server's import path and environment, those of the moment it
    # started (once per driver process): the driver's at the pool's start instead, as a spawned worker has them.
    sys.path[:] = sys_path
    os.environ.clear()
    os.environ.update(environ)
    _init_worker()


# What the fork server imports once, so that its workers start with it imported instead of importing it each: torch,
# the built-in models' library (smp; a run on another model pays for it once, in the server) and lusbench's cell code.
FORKSERVER_PRELOAD = ["torch", "segmentation_models_pytorch", "lusbench.exec.cells", "lusbench.train.engine"]


def _pool_context() -> Any:
    """Fork server where the platform has one (a clean process, started from the driver before any CUDA call or
    torch thread, that imports :data:`FORKSERVER_PRELOAD` and forks each worker), else spawn. Never a fork of the
    driver itself: torch and fork do not mix."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    _init_worker()  # the server starts with the driver's environment and imports torch at once
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


def _stop_fork_server() -> None:
    """Ask the fork server to exit, without waiting for it: having imported torch, it takes a second or more to exit,
    and until it has, it holds the run's stdout and stderr open (a pipe reading them, as in CI, would wait for it
    after the driver is done). Stopped now, it exits while the driver writes the results. A later pool starts a new
    one. The standard library offers no public call for this; where its private one is missing, the server exits
    with the driver, as it always does."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:
        threading.Thread(target=stop, name="lusbench-stop-fork-server", daemon=True).start()


class ProcessExecutor(Executor):
    """A pool of ``workers`` processes on this machine, forked from a fork server (spawned where there is none)."""

    def __init__(self, workers: str | None = None) -> None:
        self.workers = _positive(workers, "process workers") if workers is not None else cpu_cores()
        self.name = f"process:{self.workers}"
        self._pool: Any = None
        self._starting: threading.Thread | None = None  # prepare's, while it starts the workers

    def _started(self) -> Any:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        return self._pool_now()

    def _pool_now(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_pool_context(),
                                             initializer=_init_pool_worker, initargs=(sys.path[:], dict(os.environ)))
        return self._pool

    def prepare(self, warm_up: Callable[[dict[str, Any]], None], config: dict[str, Any]) -> None:
        # One warm-up per worker (its dataset built, its model made once) while the driver resolves the specs and
        # builds its own dataset. In a thread: starting the first worker waits for the fork server to have imported
        # torch (seconds), which the driver need not wait for. An error here is the cells' to meet again.
        def start() -> None:
            pool = self._pool_now()
            for _ in range(self.workers):
                pool.submit(warm_up, config)

        self._starting = threading.Thread(target=start, name="lusbench-process-pool", daemon=True)
        self._starting.start()

    def map(self, fn: CellFn, cells: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        pool = self._started()
        futures = [pool.submit(fn, cell) for cell in cells]
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise UserError(f"--executor {self.name}: a worker process died (killed, or out of memory?); the "
                                    "cells that finished are kept, rerun to resume") from None
                yield result
        finally:
            for future in futures:
                future.cancel()
        # Every cell is in and the workers are idle: stopped now rather than left to tear torch down on exit (a second
        # or more at the end of the run); a later map starts a new pool.
        self._stop_pool()

    def _stop_pool(self) -> None:
        # Python 3.14 names this; before, it is the pool's table of processes.
        terminate = getattr(self._pool, "terminate_workers", None)
        if terminate is not None:
            terminate()
        else:
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        _stop_fork_server()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._pool is not None:
            # Not every cell came back (an error, Ctrl-C), or none was needed (all reused): nothing the workers are
            # doing now would be kept, so stop them rather than wait for a cell or a warm-up to finish.
            self._stop_pool()


class DaskExecutor(Executor):
    """Dask distributed: ``dask`` starts a LocalCluster bound to 127.0.0.1 (one single-threaded worker process per
    core); ``dask:tcp://HOST:PORT`` attaches to a running scheduler, whose workers need lusbench and the run's
    plugins installed. A worker lost mid-cell is Dask's to handle: it reruns the cell on another worker."""

    def __init__(self, address: str | None = None) -> None:
        try:
            import distributed  # noqa: F401 - checked now: the extra is optional
        except ImportError:
            raise ValueError("Dask is not installed: pip install 'lusbench[dask]'") from None
        self.address = address
        self.name = f"dask:{address}" if address else "dask"
        self._cluster: Any = None
        if address is None:
            from distributed import LocalCluster

            self._cluster = LocalCluster(n_workers=cpu_cores(), threads_per_worker=1, processes=True, host="127.0.0.1",
                                         dashboard_address=None)
        from distributed import Client

        try:
            self._client = Client(self._cluster if self._cluster is not None else address, timeout="20s")
        except OSError as exc:
            self._close_cluster()
            raise ValueError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self._client.run(_init_worker)
        self.workers = max(1, len(self._client.scheduler_info(n_workers=-1)["workers"]))

    def cell_threads(self, requested: int | None) -> int:
        # Each Dask worker runs one cell per worker thread; one torch thread each unless --threads says otherwise
        # (the thread count is part of the training key, so it must not depend on which worker a cell lands on).
        return requested if requested is not None else 1

    def map(self, fn: CellFn, cells: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        from distributed import KilledWorker, as_completed

        futures = [self._client.submit(fn, cell, pure=False) for cell in cells]
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except KilledWorker as exc:
                    raise UserError(f"--executor {self.name}: every worker that ran a cell died ({exc}); the cells "
                                    "that finished are kept, rerun to resume") from None
                yield result
        finally:
            self._client.cancel(futures)

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def close(self) -> None:
        self._client.close()
        self._close_cluster()


BUILTIN: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "process": ProcessExecutor,
    "dask": DaskExecutor,
}


def create_executor(spec: str, plugins: Plugins) -> Executor:
    """The executor of ``--executor SPEC``: a built-in, or one a plugin registered (``register_executors``)."""
    name = spec.partition(":")[0].strip()
    if name in BUILTIN:
        taken = [e.plugin for e in plugins.executors.entries() if e.name == name]
        if taken:
            raise PluginError(f"executors name '{name}' is built into lusbench and registered by plugin '{taken[0]}' "
                              "too; rename the plugin's executor")
        # The address of dask:tcp://HOST:PORT holds ':' itself: everything after the name is one argument.
        rest = spec.partition(":")[2].strip()
        try:
            made = BUILTIN[name](*([rest] if rest else []))
        except (ValueError, TypeError) as exc:
            raise UserError(f"--executor '{spec}': {exc}") from None
    else:
        if name not in plugins.executors.names():
            known = ", ".join([*BUILTIN, *plugins.executors.names()])
            raise UserError(f"--executor '{spec}': unknown name '{name}' (known: {known})")
        made = plugins.executors.create(spec)
    if not isinstance(made, Executor):
        raise PluginError(f"--executor '{spec}': the factory made a {type(made).__name__}, not a lusbench Executor")
    return made
