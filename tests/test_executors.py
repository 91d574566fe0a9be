"""Executors: ``--executor local|process[:N]|dask[:ADDRESS]`` and plugin executors give the same results, commit
each cell as it arrives, resume an interrupted grid, and survive a lost Dask worker without losing or duplicating
a record.

The training runs are real and tiny (12 patients at 32x32, 2 folds, 2 epochs); the worker processes are real
(forked from a fork server, or a Dask LocalCluster on 127.0.0.1), which is what makes the slow ones slow: a pool
starts a fresh Python that imports torch.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.errors import PluginError, UserError
from lusbench.exec.executors import LocalExecutor, ProcessExecutor, cpu_cores, create_executor
from lusbench.exec.plan import RunPlan
from lusbench.exec.runner import run
from lusbench.progress import Progress
from lusbench.results.store import DB_NAME
from tests.conftest import REPO, run_cli

DATASET = "synthetic-lus:patients=12,size=32"
MODEL = "unet:resnet18,depth=3"
TRAIN = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "weight_decay": 1e-4, "patience": None, "augment": True,
         "amp": True}
CLI_GRID = ["run", "--dataset", DATASET, "--model", MODEL, "--folds", "2", "--seeds", "2", "--epochs", "2",
            "--reference", "none", "--no-tasks", "--device", "cpu"]


def _plan(run_dir: Path, executor: str, seeds: int = 1) -> RunPlan:
    return RunPlan(strategies=["threshold:0.6", "soft"], dataset=DATASET, model=MODEL, tasks=[], preset="test",
                   seeds=list(range(seeds)), folds=2, train=TRAIN, val_fraction=0.2, eval_threshold=0.5, device="cpu",
                   run_dir=run_dir, reference=None, executor=executor)


def _records(run_dir: Path) -> list[tuple]:
    """(row, seed, fold, kind) of every record in the store; kind: trained or evaluated."""
    with sqlite3.connect(run_dir / DB_NAME) as db:
        # seed >= 0: the cells, not the expert labels' own score (seed and fold -1)
        rows = db.execute("SELECT row, seed, fold, eval_key FROM records WHERE task='' AND seed >= 0").fetchall()
    return sorted((row, seed, fold, "evaluated" if eval_key else "trained") for row, seed, fold, eval_key in rows)


def _expected_records(strategies: list[str], seeds: int, folds: int = 2) -> list[tuple]:
    return sorted((s, seed, fold, kind) for s in strategies for seed in range(seeds) for fold in range(folds)
                  for kind in ("trained", "evaluated"))


@pytest.fixture
def one_thread():
    """Local cells train with the driver's thread count; the pools' workers with one thread each (2 cores / 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- specs -------------------------------------------------------------------------------------------------------

def test_executor_specs_and_threads_per_cell():
    plugins = load_plugins()
    assert isinstance(create_executor("local", plugins), LocalExecutor)
    pool = create_executor("process:3", plugins)
    assert isinstance(pool, ProcessExecutor) and pool.name == "process:3" and pool.workers == 3
    # The workers share the cores out; --threads, when given, wins.
    assert pool.cell_threads(None) == max(1, cpu_cores() // 3)
    assert pool.cell_threads(2) == 2
    assert create_executor("process", plugins).workers == cpu_cores()
    for spec, message in [("process:0", "process workers must be a positive integer, got '0'"),
                          ("process:two", "process workers must be a positive integer, got 'two'"),
                          ("ray", "unknown name 'ray' (known: local, process, dask)")]:
        with pytest.raises(UserError, match=re.escape(f"--executor '{spec}': {message}")):
            create_executor(spec, plugins)


def test_a_bad_executor_is_one_line_and_exit_2_before_any_work(tmp_path):
    proc = run_cli(*CLI_GRID, "--strategy", "soft", "--out", str(tmp_path / "run"), "--executor", "process:0")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("lusbench run: error: --executor 'process:0': process workers must be a positive "
                                   "integer, got '0'")
    assert not (tmp_path / "run").exists()


def test_a_spec_error_stops_the_warming_workers_and_is_one_line(tmp_path):
    # The pool starts warming up before the specs are resolved; a typo must still be one line and exit 2.
    proc = run_cli(*CLI_GRID, "--strategy", "nosuch", "--out", str(tmp_path / "run"), "--executor", "process:2")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("lusbench run: error: --strategy 'nosuch': unknown") and \
        len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


def test_an_error_in_the_driver_terminates_the_pool_instead_of_waiting_for_its_work():
    pool = ProcessExecutor("2")
    with pytest.raises(KeyError), pool:
        pool.prepare(time.sleep, 60)  # a warm-up that would hold each worker for a minute
        while pool._pool is None or len(pool._pool._processes) < 2:  # prepare starts the workers in a thread
            time.sleep(0.05)
        workers = list(pool._pool._processes.values())
        raise KeyError("a spec error in the driver")
    # Stopped by SIGTERM, not exited after sleeping out the warm-up.
    assert [w.exitcode for w in workers] == [-signal.SIGTERM] * 2


def test_the_fork_server_exits_once_the_last_cell_is_in():
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform: the workers are spawned")
    with ProcessExecutor("2") as pool:
        results = pool.map(abs, [-1, -2, -3])
        first = next(results)
        server = forkserver._forkserver._forkserver_pid
        assert server is not None
        assert sorted([first, *results]) == [1, 2, 3]
        stopping = [t for t in threading.enumerate() if t.name == "lusbench-stop-fork-server"]
        for thread in stopping:
            thread.join(timeout=60)
        # Reaped: it no longer holds the driver's stdout and stderr, and a later pool starts a new one.
        assert stopping and forkserver._forkserver._forkserver_pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(server, 0)
        assert sorted(pool.map(abs, [-4, -5])) == [4, 5]


class _InDriverElsewhere(LocalExecutor):
    """Runs the cells in the driver but says they run elsewhere, as process and dask do; notes the driver's
    torch thread count when the cells are handed over."""

    in_process = False
    threads_at_map: list[int] = []

    def cell_threads(self, requested: int | None) -> int:
        return 1

    def map(self, fn, cells):
        self.threads_at_map.append(torch.get_num_threads())
        yield from super().map(fn, cells)


def test_the_driver_evaluates_at_one_thread_while_workers_elsewhere_train(tmp_path, monkeypatch):
    # The cores are the workers': a driver at its default thread count (one per core) would take cycles from them.
    import lusbench.exec.runner as runner

    monkeypatch.setattr(runner, "create_executor", lambda spec, plugins: _InDriverElsewhere())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        doc = run(_plan(tmp_path / "run", "elsewhere"), load_plugins(), Progress(quiet=True))
    finally:
        torch.set_num_threads(threads)
    assert _InDriverElsewhere.threads_at_map == [1]
    assert doc["environment"]["torch_threads"] == 1


def test_an_unreachable_dask_scheduler_is_one_line(tmp_path):
    pytest.importorskip("distributed")
    proc = run_cli(*CLI_GRID, "--strategy", "soft", "--out", str(tmp_path / "run"), "--executor", "dask:tcp://127.0.0.1:9")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--executor 'dask:tcp://127.0.0.1:9': cannot reach the Dask scheduler at tcp://127.0.0.1:9" in proc.stderr


# -- plugin executors ----------------------------------------------------------------------------------------------

PLUGIN = textwrap.dedent('''
    import lusbench
    from lusbench_builtins.strategies import ThresholdStrategy


    class Reversed(lusbench.Executor):
        """Runs the cells in this process, last first, through the workers' path (plugins loaded from the cell)."""

        name = "reversed"

        def __init__(self, *args):
            if args:
                raise ValueError("takes no arguments")

        def map(self, fn, cells):
            for cell in reversed(cells):
                yield fn(cell)


    class Strict(ThresholdStrategy):
        """A strategy only this plugin knows: a worker must load the -p module to make it."""

        def __init__(self):
            super().__init__(0.7)
            self.name = "strict"


    @lusbench.hookimpl
    def register_executors(register):
        register("reversed", Reversed)


    @lusbench.hookimpl
    def register_label_strategies(register):
        register("strict", Strict)
''')


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "ex_plugin.py").write_text(PLUGIN)
    (site / "ex_clash.py").write_text(PLUGIN.replace('register("reversed"', 'register("local"'))
    monkeypatch.syspath_prepend(str(site))
    yield {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    for name in ("ex_plugin", "ex_clash"):
        sys.modules.pop(name, None)


def test_a_plugin_executor_runs_the_grid_and_is_listed(tmp_path, plugin_module):
    proc = run_cli("-p", "ex_plugin", *CLI_GRID, "--seeds", "1", "--strategy", "strict", "--out", str(tmp_path / "run"),
                   "--executor", "reversed", env=plugin_module)
    assert proc.returncode == 0, proc.stderr
    # Last cell first, each committed as it arrived.
    folds = [line.split(":")[0] for line in proc.stderr.splitlines() if line.startswith("[")]
    assert folds == ["[1/2] strict seed 0 fold 1", "[2/2] strict seed 0 fold 0"]
    assert _records(tmp_path / "run") == _expected_records(["strict"], 1)
    listed = run_cli("-p", "ex_plugin", "plugins", "--json", env=plugin_module)
    assert '"name": "reversed"' in listed.stdout


def test_a_plugin_registering_local_is_refused(plugin_module):
    plugins = load_plugins(["ex_clash"])
    with pytest.raises(PluginError, match="executors name 'local' is built into lusbench and registered by plugin "
                                          "'ex_clash' too; rename the plugin's executor"):
        create_executor("local", plugins)


@pytest.mark.slow
def test_process_workers_load_the_p_plugins(tmp_path, plugin_module):
    proc = run_cli("-p", "ex_plugin", *CLI_GRID, "--seeds", "1", "--strategy", "strict", "--out", str(tmp_path / "run"),
                   "--executor", "process:2", env=plugin_module)
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "run") == _expected_records(["strict"], 1)


# -- same results everywhere ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_local_process_and_dask_give_identical_leaderboards(tmp_path, one_thread):
    pytest.importorskip("distributed")
    plugins = load_plugins()
    docs = {name: run(_plan(tmp_path / name.replace(":", "-"), name), plugins, Progress(quiet=True))
            for name in ("local", "process:2", "dask")}
    metrics = {name: {row["strategy"]: row["metrics"] for row in doc["rows"]} for name, doc in docs.items()}
    assert metrics["local"] == metrics["process:2"] == metrics["dask"]
    assert {doc["environment"]["torch_threads"] for doc in docs.values()} == {1}
    assert [doc["environment"]["executor"] for doc in docs.values()] == ["local", "process:2", "dask"]
    # The strategies were not all equal: the comparison above compares trained models, not constants.
    assert metrics["local"]["soft"]["dice"] != metrics["local"]["threshold:0.6"]["dice"]


# -- resume and lost workers ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_interrupted_process_grid_resumes(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lusbench.cli", *CLI_GRID, "--strategy", "soft", "--out", str(out),
               "--executor", "process:2"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "CI": "1"}, cwd=REPO)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[1/4]"):
            proc.send_signal(signal.SIGINT)  # Ctrl-C of the driver once the first cell is committed
            break
    seen.append(proc.stderr.read())
    assert proc.wait(timeout=300) == 130, "".join(seen)
    kept = _records(out)
    assert 2 <= len(kept) < 8 and len(kept) % 2 == 0  # whole cells only: trained and evaluated
    resumed = run_cli(*CLI_GRID, "--strategy", "soft", "--out", str(out), "--executor", "process:2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"reusing {len(kept) // 2} of 4 trained folds" in resumed.stderr
    assert len([line for line in resumed.stderr.splitlines() if line.startswith("[")]) == 4 - len(kept) // 2
    assert _records(out) == _expected_records(["soft"], 2)


@pytest.mark.slow
def test_killing_a_dask_worker_mid_grid_loses_and_duplicates_nothing(tmp_path, one_thread):
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    killed: list[str] = []
    stop = threading.Event()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:

        def kill_a_busy_worker() -> None:
            while not stop.is_set() and not killed:
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    time.sleep(2)  # well into the cell: importing torch, building the dataset or training
                    if client.processing().get(busy[0]):
                        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                        os.kill(pid, signal.SIGKILL)
                        killed.append(busy[0])
                time.sleep(0.1)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        try:
            doc = run(_plan(tmp_path / "run", f"dask:{cluster.scheduler_address}", seeds=2), load_plugins(),
                      Progress(quiet=True))
        finally:
            stop.set()
            killer.join()
    assert killed, "no worker was killed while it ran a cell"
    assert _records(tmp_path / "run") == _expected_records(["threshold:0.6", "soft"], 2)
    rows = {row["strategy"]: row for row in doc["rows"]}
    assert all(rows[s]["metrics"]["dice"]["n"] == 12 for s in ("threshold:0.6", "soft"))  # every patient scored


@pytest.mark.slow
def test_the_worked_dask_example_of_the_docs(tmp_path):
    """docs/executors.md's scheduler, workers and run, on a free port, at test size (2 folds, 1 epoch, no tasks)."""
    pytest.importorskip("distributed")
    text = (REPO / "docs" / "executors.md").read_text()
    block = re.search(r"## A worked Dask example.*?```sh\n(.*?)```", text, re.S).group(1)
    lines = [line.split("#")[0].strip().rstrip("&").strip() for line in block.splitlines()]
    scheduler, worker, command = [shlex.split(line) for line in lines if line]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    bin_dir = Path(sys.executable).parent
    started = []
    try:
        for args in (scheduler, worker):
            args = [str(bin_dir / args[0]), *(a.replace("8786", port) for a in args[1:])]
            started.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path))
        assert command[:2] == ["lusbench", "run"]
        proc = run_cli(*[a.replace("8786", port) for a in command[1:]], "--folds", "2", "--epochs", "1", "--no-tasks",
                       "--reference", "none", cwd=tmp_path)
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("[")]) == 4
    assert _records(tmp_path / "lusbench-runs") == _expected_records(["threshold:0.6", "soft"], 1)


@pytest.mark.slow
def test_a_dead_process_worker_stops_the_run_in_one_line_and_keeps_finished_cells(tmp_path, one_thread):
    import multiprocessing

    stop = threading.Event()
    killed: list[int] = []

    def kill_a_worker_after_the_first_cell() -> None:
        while not stop.is_set() and not killed:
            workers = multiprocessing.active_children()
            try:
                finished = (tmp_path / "run" / DB_NAME).exists() and _records(tmp_path / "run")
            except sqlite3.OperationalError:  # the store's tables are not created yet
                finished = False
            if finished and workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker_after_the_first_cell)
    killer.start()
    try:
        with pytest.raises(UserError, match=r"^--executor process:2: a worker process died \(killed, or out of memory\?\); "
                                            "the cells that finished are kept, rerun to resume$"):
            run(_plan(tmp_path / "run", "process:2", seeds=2), load_plugins(), Progress(quiet=True))
    finally:
        stop.set()
        killer.join()
    assert killed
    kept = _records(tmp_path / "run")
    assert kept and len(kept) < 16 and len(kept) % 2 == 0
