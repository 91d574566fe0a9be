"""Harness overhead: ``train_model`` against a bare PyTorch loop of the same model, batch, data and optimizer.

Both sides run in this process, interleaved round by round (the bare loop runs in pytest-benchmark's
untimed ``setup`` of each harness round), and each side's best round counts. Both do the same number of
optimizer steps on the same frames with the same model and loss (the strategy's BCE + soft Dice). What
the harness does on top, and pays for here: the label strategy's targets per batch, on-device
augmentation, the one-cycle schedule, deterministic kernels, a validation pass each epoch over a
validation split a quarter the size of the training split, and keeping the best weights. What it does
differently, where the bare loop does what a plain loop usually does: its AdamW is the fused one (one kernel
updates every parameter tensor) instead of AdamW's default Python loop over the parameter tensors, and its model
and batches are in channels_last memory format instead of NCHW (``test_bench_memory_format.py``); what these
save pays for the validation pass (figures in docs/benchmarks.md).

The ratio (harness img/s over bare img/s) is taken on this process's CPU time with torch on one thread,
so that other jobs on a shared machine slow neither side's count; the wall-clock ratio is recorded too.

    .venv/bin/pytest benchmarks/test_bench_training.py --benchmark-only
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from lusbench.api.plugins import load_plugins
from lusbench.train import engine as training

EPOCHS = 3
BATCH = 32
N_TRAIN = 4 * BATCH
N_VAL = N_TRAIN // 4
SIZE = 32
ROUNDS = 7
MIN_RATIO = 0.95


def test_harness_overhead(benchmark):
    torch.set_num_threads(1)
    plugins = load_plugins()
    dataset = plugins.datasets.create(f"synthetic-lus:patients=16,size={SIZE}")
    builder = plugins.models.create("unet")
    strategy = plugins.strategies.create("threshold:0.5")
    device = torch.device("cpu")
    images, confidence = training.dataset_tensors(dataset, device)
    frames = np.arange(N_TRAIN + N_VAL)
    train_idx, val_idx = frames[:N_TRAIN], frames[N_TRAIN:]
    config = training.TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-3, weight_decay=1e-4, patience=EPOCHS,
                                  augment=True, amp=True)

    def harness() -> None:
        trained = training.train_model(builder, strategy, images, confidence, train_idx, val_idx, config, seed=0,
                                       device=device)
        assert len(trained.history) == EPOCHS  # no early stop: as many steps as the bare loop

    def bare() -> None:
        torch.manual_seed(0)
        model = builder.build(1, confidence.shape[1])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        train_t = torch.as_tensor(train_idx)
        model.train()
        for _ in range(EPOCHS):
            for idx in train_t[torch.randperm(N_TRAIN)].split(BATCH):
                target = (confidence[idx] >= 0.5).float()
                loss = strategy.loss(model(images[idx]), target, None)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    cpu: dict[str, list[float]] = {"bare": [], "harness": []}
    wall: dict[str, list[float]] = {"bare": [], "harness": []}

    def timed(name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - started_cpu)
            wall[name].append(time.perf_counter() - started_wall)
        return run

    bare()  # warm-up: first-call allocations and kernel selection
    benchmark.pedantic(timed("harness", harness), setup=timed("bare", bare), rounds=ROUNDS, iterations=1, warmup_rounds=1)

    images_seen = EPOCHS * N_TRAIN
    ratio = min(cpu["bare"]) / min(cpu["harness"])
    benchmark.extra_info.update({
        "ratio": round(ratio, 3),
        "wall_ratio": round(min(wall["bare"]) / min(wall["harness"]), 3),
        "harness_img_per_s": round(images_seen / min(cpu["harness"]), 1),
        "bare_img_per_s": round(images_seen / min(cpu["bare"]), 1),
        "model": builder.name, "image_size": SIZE, "batch": BATCH, "steps": EPOCHS * N_TRAIN // BATCH,
        "threads": torch.get_num_threads(),
    })
    print(f"\nharness/bare loop throughput: {benchmark.extra_info}")
    assert ratio >= MIN_RATIO, f"harness reaches only {ratio:.2f} of the bare loop's throughput"
