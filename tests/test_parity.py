"""Parity with a plain PyTorch loop: on a small, sparse one-class dataset, lusbench's out-of-fold Dice matches
what a minimal loop written here (no lusbench training code) reaches with the same smp model, settings, data,
folds and seed. A harness whose early stopping or schedule kills training on small real data fails this.
"""

from __future__ import annotations

import json
import math
import textwrap
import time

import numpy as np
import pytest
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

FRAMES, SIZE, PATIENTS, FOLDS, EPOCHS, BATCH, LR, WD = 40, 32, 10, 5, 30, 8, 3e-3, 1e-4

PLUGIN = textwrap.dedent('''
    """A sparse one-class dataset: a few small bright blobs per frame, about 4% foreground."""
    import numpy as np

    import lusbench


    def sparse_blobs():
        """Small bright blobs in speckle (parity test data)."""
        rng = np.random.default_rng(7)
        yy, xx = np.mgrid[:32, :32]
        images = np.zeros((40, 32, 32), np.uint8)
        confidence = np.zeros((40, 1, 32, 32), np.uint8)
        for i in range(40):
            img = rng.normal(70, 18, (32, 32))
            for _ in range(rng.integers(1, 4)):
                cy, cx, r = rng.integers(4, 28), rng.integers(4, 28), rng.uniform(1.8, 3.2)
                d = np.hypot(yy - cy, xx - cx)
                img += 90 * (d < r)
                confidence[i, 0] = np.maximum(confidence[i, 0], np.where(d < r, 10, np.where(d < r + 1, 5, 0)))
            images[i] = np.clip(img, 0, 255)
        patient = np.arange(40) // 4
        return lusbench.LUSDataset("sparse-blobs", images, confidence, 10, patient, np.ones(40, int),
                                   np.zeros(40, int), classes=("blob",))


    @lusbench.hookimpl
    def register_datasets(register):
        register("sparse-blobs", sparse_blobs)
''')


def dice_per_patient(pred: np.ndarray, label: np.ndarray, patient: np.ndarray) -> float:
    """Mean over patients of the mean per-frame Dice (frames empty in both prediction and label left out)."""
    inter = (pred & label).sum((1, 2, 3))
    total = pred.sum((1, 2, 3)) + label.sum((1, 2, 3))
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), np.nan)
    per_patient = [np.nanmean(dice[patient == p]) for p in np.unique(patient) if np.isfinite(dice[patient == p]).any()]
    return float(np.mean(per_patient))


def plain_loop_dice(images: np.ndarray, confidence: np.ndarray, patient: np.ndarray, folds: list[np.ndarray]) -> float:
    """A minimal training loop: the same smp U-Net, AdamW + one-cycle, BCE + soft Dice, no early stopping."""
    import segmentation_models_pytorch as smp

    torch.set_num_threads(1)
    x_all = torch.from_numpy(images).float().div(255).unsqueeze(1)
    y_all = torch.from_numpy(confidence).float().div(10).ge(0.5 - 1e-6).float()
    probs = np.zeros(confidence.shape, np.float32)
    for fold, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(images)), test)
        torch.manual_seed(fold)
        model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=1, encoder_depth=3,
                         decoder_channels=(32, 16, 8))
        steps = EPOCHS * math.ceil(len(train) / BATCH)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.2)
        gen = torch.Generator().manual_seed(fold)
        for _ in range(EPOCHS):
            model.train()
            order = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)]
            for idx in order.tensor_split(math.ceil(len(train) / BATCH)):
                logits = model(x_all[idx])
                p, t = torch.sigmoid(logits), y_all[idx]
                bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
                soft_dice = 1 - (2 * (p * t).sum((2, 3)) + 1) / (p.sum((2, 3)) + t.sum((2, 3)) + 1)
                loss = bce + soft_dice.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        with torch.no_grad():
            probs[test] = torch.sigmoid(model(x_all[torch.as_tensor(test)])).numpy()
    label = confidence >= 5
    return dice_per_patient(probs >= 0.5, label, patient)


def test_lusbench_matches_a_plain_loop_on_sparse_small_data(tmp_path, capsys):
    (tmp_path / "sparse_plugin.py").write_text(PLUGIN)
    env = {"PYTHONPATH": str(tmp_path)}
    started = time.perf_counter()
    proc = run_cli("-p", "sparse_plugin", "run", "--dataset", "sparse-blobs", "--model", "unet:resnet18,depth=3,decoder=32-16-8",
                   "--strategy", "threshold:0.5", "--reference", "none", "--no-tasks", "--seeds", "1", "--folds", str(FOLDS),
                   "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr", str(LR), "--weight-decay", str(WD),
                   "--patience", "none", "--val-fraction", "0", "--no-augment", "--device", "cpu",
                   "--out", str(tmp_path / "run"), "--json", str(tmp_path / "lb.json"), env=env)
    lusbench_seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "lb.json").read_text())
    ours = next(r for r in doc["rows"] if r["strategy"] == "threshold:0.5")["metrics"]["dice"]["mean"]

    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        data = importlib.import_module("sparse_plugin").sparse_blobs()
    finally:
        sys.path.remove(str(tmp_path))
    assert 0.02 < (data.confidence >= 5).mean() < 0.08  # hard class imbalance, as intended
    from lusbench.data.folds import patient_folds  # the same folds (data, not training code)

    started = time.perf_counter()
    plain = plain_loop_dice(data.images, data.confidence, data.patient, patient_folds(data.patient, FOLDS, 0))
    plain_seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nparity: lusbench dice {ours:.3f} ({lusbench_seconds:.0f} s, whole CLI run), "
              f"plain loop dice {plain:.3f} ({plain_seconds:.0f} s)")
    assert plain > 0.3, "the plain loop itself did not learn: the test data is broken"
    assert abs(ours - plain) <= 0.03
