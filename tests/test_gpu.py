"""The GPU path: precision selection (bf16 where native, else fp16 with a gradient scaler), cuBLAS determinism set
before the first CUDA call, and, on a machine with CUDA, a smoke training, two identical runs and the selection
checked against the card. The CUDA tests skip without CUDA; the selection logic is tested here on any machine
with a faked capability query."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.train import engine as training
from lusbench.train.config import TrainConfig

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_only_where_native_else_fp16():
    assert training.amp_dtype(CUDA, True, bf16_native=lambda: True) is torch.bfloat16
    assert training.amp_dtype(CUDA, True, bf16_native=lambda: False) is torch.float16
    assert training.amp_dtype(CUDA, False, bf16_native=lambda: True) is None
    assert training.amp_dtype(torch.device("cpu"), True, bf16_native=lambda: True) is None
    assert [training.precision_name(d) for d in (torch.bfloat16, torch.float16, None)] == ["bf16", "fp16", "fp32"]


def test_cublas_workspace_is_configured_when_the_engine_is_imported():
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    code = "import os, lusbench.train.engine; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ":4096:8"


def _train_on_cuda(amp: bool = True) -> training.TrainedModel:
    plugins = load_plugins()
    dataset = plugins.datasets.create("synthetic-lus:patients=8,size=64")
    images, confidence = training.dataset_tensors(dataset, CUDA)
    frames = np.arange(dataset.n_frames)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, weight_decay=1e-4, patience=None, augment=True, amp=amp)
    return training.train_model(plugins.models.create("unet:resnet18,depth=3"), plugins.strategies.create("soft"), images,
                                confidence, frames[8:], frames[:8], config, seed=3, device=CUDA)


@needs_cuda
def test_cuda_smoke_training_is_finite_channels_last_and_on_the_device():
    trained = _train_on_cuda()
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in trained.history)
    weight = next(p for p in trained.model.parameters() if p.dim() == 4)
    assert weight.is_cuda and weight.is_contiguous(memory_format=torch.channels_last)


@needs_cuda
def test_two_cuda_runs_with_the_same_seed_give_the_same_weights():
    first, second = _train_on_cuda().model.state_dict(), _train_on_cuda().model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@needs_cuda
def test_the_selected_precision_matches_the_card():
    major, _ = torch.cuda.get_device_capability()
    assert training.amp_dtype(CUDA, True) is (torch.bfloat16 if major >= 8 else torch.float16)
