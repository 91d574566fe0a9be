"""Speed of the synthetic-lus simulator (issue: >= 500 frames/s at 128x128 on one core; default dataset < 5 s).

Throughput is timed in CPU seconds of this process (``time.process_time``): the simulator is single-threaded
numpy, so this is its speed on one core, unaffected by other processes competing for the machine. The
default dataset is timed by the wall clock, as a user waits for it. The best round counts.

    .venv/bin/pytest benchmarks/test_bench_synthetic.py --benchmark-only
"""

from __future__ import annotations

import time

import pytest

from lusbench_builtins.synthetic import make_synthetic_dataset
from lusbench_builtins.synthetic.config import SyntheticConfig
from lusbench_builtins.synthetic.simulate import simulate

MIN_FRAMES_PER_S = 500
MAX_DEFAULT_S = 5.0


@pytest.mark.benchmark(group="synthetic-lus", timer=time.process_time)
def test_frames_per_second_at_128(benchmark):
    config = SyntheticConfig(patients=10, size=128)  # 120 frames
    frames = config.patients * config.visits * config.zones * config.frames
    dataset = benchmark.pedantic(simulate, args=(config,), rounds=5, iterations=1, warmup_rounds=1)
    assert dataset.n_frames == frames
    fps = frames / benchmark.stats.stats.min
    benchmark.extra_info.update({"frames": frames, "size": 128, "frames_per_cpu_s": round(fps)})
    print(f"\n{fps:.0f} frames per CPU-second at 128x128 ({frames} frames)")
    assert fps >= MIN_FRAMES_PER_S


@pytest.mark.benchmark(group="synthetic-lus")
def test_default_dataset(benchmark):
    dataset = benchmark.pedantic(make_synthetic_dataset, rounds=3, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update({"frames": dataset.n_frames, "name": dataset.name, "seconds": round(seconds, 3)})
    print(f"\ndefault dataset ({dataset.n_frames} frames at {dataset.image_shape[0]}px): {seconds:.2f} s wall clock")
    assert seconds < MAX_DEFAULT_S
