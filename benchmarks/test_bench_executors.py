"""Executors: wall time of the same 4-cell quick grid (2 strategies x 1 seed x 2 folds, no tasks) with ``--executor
local`` and ``--executor process:2``, each a fresh ``lusbench run`` process into an empty run directory, so both
pay the same start-up (imports, dataset, plan) and ``process`` also pays for starting its workers.

``local`` trains one cell at a time with one thread (``--threads``' default); ``process:2`` trains two cells at a
time with one thread each (cores // workers), so both train bit-identical folds. The runs go local, process,
process, local (ABBA): a machine whose speed drifts during the four minutes (a shared VM's can, by half within an
hour) slows both executors alike instead of whichever ran last. The ratio (process wall time over local wall
time, each summed over its two runs) is asserted to be at most ``MAX_RATIO``; run it with nothing else on the
machine:

    .venv/bin/pytest benchmarks/test_bench_executors.py --benchmark-only -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lusbench.exec.executors import cpu_cores

MAX_RATIO = 0.65
GRID = ["run", "--preset", "quick", "--strategy", "threshold:0.6", "--strategy", "soft", "--reference", "none",
        "--no-tasks", "--folds", "2", "--device", "cpu", "--quiet"]


def _wall_time(out: Path, executor: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lusbench.cli", *GRID, "--out", str(out), "--executor", executor],
                          capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=900)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    return seconds


@pytest.mark.skipif(cpu_cores() < 2, reason="the process pool needs two cores to run two cells at once")
def test_process_pool_against_local(benchmark, tmp_path):
    times: dict[str, list[float]] = {"local": [], "process:2": []}

    def abba() -> None:
        for run, executor in enumerate(["local", "process:2", "process:2", "local"]):
            times[executor].append(_wall_time(tmp_path / f"run{run}", executor))

    benchmark.pedantic(abba, rounds=1, iterations=1)
    ratio = sum(times["process:2"]) / sum(times["local"])
    benchmark.extra_info.update({"local_s": [round(t, 1) for t in times["local"]],
                                 "process2_s": [round(t, 1) for t in times["process:2"]],
                                 "ratio": round(ratio, 3), "cells": 4, "cores": cpu_cores()})
    print(f"\nexecutors, 4-cell quick grid: {benchmark.extra_info}")
    assert ratio <= MAX_RATIO, f"process:2 took {ratio:.2f} of local's wall time"
