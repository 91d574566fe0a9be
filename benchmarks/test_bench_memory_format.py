"""Memory format on the CPU: one training step (forward, loss, backward) and one validation forward pass of the
presets' models in channels_last against NCHW, same model, weights and batch, torch on one thread.

The training engine puts model and batches in channels_last on every device (``lusbench/train/engine.py``); this
suite checks that the choice holds on the CPU it runs on. Per preset size (``quick``: U-Net resnet18 depth 3 at
32x32, batch 16; ``default``: U-Net resnet18 at 64x64, batch 16; ``paper``: U-Net resnet18 at 128x128, batch 32)
the two formats alternate round by round and each side's best round counts (CPU time). Asserted: a channels_last
training step takes at most ``MAX_RATIO`` of the NCHW one's time.

    .venv/bin/pytest benchmarks/test_bench_memory_format.py --benchmark-only -s
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.train import engine as training

ROUNDS = 3
MAX_RATIO = 1.0
CASES = [("unet:resnet18,depth=3", 32, 16), ("unet", 64, 16), ("unet:resnet18", 128, 32)]


def _best_cpu_time(fn: Callable[[], None], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize(("model_spec", "size", "batch"), CASES, ids=[f"{s}px" for _, s, _ in CASES])
def test_channels_last_against_nchw(benchmark, model_spec: str, size: int, batch: int):
    torch.set_num_threads(1)
    plugins = load_plugins()
    dataset = plugins.datasets.create(f"synthetic-lus:patients=4,size={size}")
    strategy = plugins.strategies.create("threshold:0.5")
    images, confidence = training.dataset_tensors(dataset, torch.device("cpu"))
    x, target = images[:batch], (confidence[:batch] >= 0.5).float()
    torch.manual_seed(0)
    model = plugins.models.create(model_spec).build(1, confidence.shape[1])

    def step(fmt: torch.memory_format) -> Callable[[], None]:
        batch_x = x.contiguous(memory_format=fmt)

        def run() -> None:
            model.to(memory_format=fmt).train()
            model.zero_grad(set_to_none=True)
            strategy.loss(model(batch_x), target, None).backward()
        return run

    def forward(fmt: torch.memory_format) -> Callable[[], None]:
        batch_x = x.contiguous(memory_format=fmt)

        def run() -> None:
            model.to(memory_format=fmt).eval()
            with torch.inference_mode():
                strategy.loss(model(batch_x), target, None)
        return run

    formats = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    train: dict[str, list[float]] = {name: [] for name in formats}
    val: dict[str, list[float]] = {name: [] for name in formats}

    def one_round() -> None:
        for name, fmt in formats.items():
            step(fmt)()  # warm-up in this format: kernel selection, first allocations
            train[name].append(_best_cpu_time(step(fmt)))
            val[name].append(_best_cpu_time(forward(fmt)))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    ms = {f"{phase}_{name}_ms": round(1e3 * min(times[name]), 1)
          for phase, times in (("train", train), ("val", val)) for name in formats}
    ratio = min(train["channels_last"]) / min(train["nchw"])
    benchmark.extra_info.update({"model": model_spec, "image_size": size, "batch": batch, **ms,
                                 "train_ratio": round(ratio, 3),
                                 "val_ratio": round(min(val["channels_last"]) / min(val["nchw"]), 3)})
    print(f"\nchannels_last/NCHW: {benchmark.extra_info}")
    assert ratio <= MAX_RATIO, f"{model_spec} at {size}x{size}: a channels_last step takes {ratio:.2f} of NCHW's"
