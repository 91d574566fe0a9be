"""Speed of feature extraction from probability maps: it runs once per strategy x seed, plus references.

    .venv/bin/pytest benchmarks/test_bench_features.py --benchmark-only
"""

from __future__ import annotations

import pytest

from lusbench.api.plugins import load_plugins
from lusbench.evaluate.features import compute_features


@pytest.fixture(scope="module")
def default_dataset():
    return load_plugins().datasets.create("synthetic-lus")


@pytest.mark.benchmark(group="features")
def test_features_of_the_default_dataset(benchmark, default_dataset):
    # The true masks as 0/1 maps stand in for a model's out-of-fold probabilities (same shape and dtype).
    maps = default_dataset.true_masks.astype("float32")
    features = benchmark.pedantic(compute_features, args=(maps, default_dataset), rounds=5, iterations=1,
                                  warmup_rounds=1)
    frames = default_dataset.n_frames
    benchmark.extra_info.update({"frames": frames, "size": default_dataset.image_shape[0],
                                 "frames_per_s": round(frames / benchmark.stats.stats.min)})
    assert features.frame.shape[0] == frames
