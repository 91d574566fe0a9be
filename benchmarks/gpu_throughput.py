"""GPU training throughput: the harness (``train_model``) against a bare PyTorch loop, and the paper preset's time.

    .venv/bin/python benchmarks/gpu_throughput.py [--skip-paper]

Prints the card, then for an smp U-Net resnet18 at 128x128 (batch 256) and resnet34 at 256x256 (batch 64) the
bare loop's and the harness's training throughput (img/s) and their ratio, then the wall time of
``lusbench run --preset paper`` for one strategy. Without CUDA it says so in one line and exits 2.

Both sides train the same model on the same device-resident batches (random images and confidence: throughput
does not depend on content) for the same number of steps, after one untimed warm-up run each. The bare loop is
bf16 (or fp16 with a scaler, as the harness selects) autocast, channels_last, AdamW, the strategy's loss; the
harness adds the label strategy's targets, on-device augmentation, the one-cycle schedule and deterministic
kernels. Neither validates (the harness is given no validation frames), so the ratio is the training loop's
overhead alone; the paper preset's time includes everything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

SIZES = (("resnet18", 128, 256), ("resnet34", 256, 64))
EPOCHS = 3
STEPS_PER_EPOCH = 8
CLASSES = 5


def throughput(builder: Any, strategy: Any, size: int, batch: int, dtype: Any, device: Any) -> dict[str, float]:
    """img/s of the bare loop and of the harness, each timed on its second run (the first warms up)."""
    import torch

    from lusbench.train import engine as training
    from lusbench.train.config import TrainConfig

    n = batch * STEPS_PER_EPOCH
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(n, 1, size, size, device=device, generator=generator)
    confidence = torch.rand(n, CLASSES, size, size, device=device, generator=generator)
    config = TrainConfig(epochs=EPOCHS, batch_size=batch, lr=1e-3, weight_decay=1e-4, patience=None, augment=True,
                         amp=True)

    def harness() -> None:
        training.train_model(builder, strategy, images, confidence, np.arange(n), np.arange(0), config, seed=0,
                             device=device)

    def bare() -> None:
        torch.manual_seed(0)
        model = builder.build(1, CLASSES).to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        model.train()
        for _ in range(EPOCHS):
            for idx in torch.randperm(n, device=device).split(batch):
                x = images[idx].contiguous(memory_format=torch.channels_last)
                target = (confidence[idx] >= 0.5).float()
                with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    logits = model(x)
                training.optimizer_step(strategy.loss(logits.float(), target, None), optimizer, scaler)

    rates = {}
    for name, fn in (("bare", bare), ("harness", harness)):
        fn()  # warm-up: cuDNN/cuBLAS handles, allocator, kernel selection
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        rates[name] = EPOCHS * n / (time.perf_counter() - started)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper preset's wall time")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_throughput: no CUDA device is available to torch {torch.__version__}; this benchmark needs a GPU",
              file=sys.stderr)
        return 2
    from lusbench.api.plugins import load_plugins
    from lusbench.train import engine as training

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    dtype = training.amp_dtype(device, True)
    print(f"card: {props.name}, compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB; "
          f"torch {torch.__version__}; precision {training.precision_name(dtype)}")
    plugins = load_plugins()
    strategy = plugins.strategies.create("threshold:0.5")
    for encoder, size, batch in SIZES:
        rates = throughput(plugins.models.create(f"unet:{encoder}"), strategy, size, batch, dtype, device)
        print(f"unet:{encoder} {size}x{size} batch {batch}: bare {rates['bare']:,.0f} img/s, harness "
              f"{rates['harness']:,.0f} img/s, ratio {rates['harness'] / rates['bare']:.3f}")
    if not args.skip_paper:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "lusbench.cli", "run", "--preset", "paper", "--strategy", "threshold:0.6",
                       "--reference", "none", "--device", "cuda", "--quiet", "--out", out]
            started = time.perf_counter()
            done = subprocess.run(command, env={**os.environ, "CI": "1"}, capture_output=True, text=True)
            seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(f"paper preset failed (exit {done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
            return 1
        print(f"paper preset, one strategy (threshold:0.6, 5 seeds x 5 folds, tasks included): {seconds:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
