"""Training on a small dataset (about 35 frames, as real multi-rater sets often are) with the default preset:
every fold trains past the learning-rate warm-up, and nothing is kept from the epochs before it."""

from __future__ import annotations

import json
import math

import pytest

from lusbench.exec.presets import PRESETS
from lusbench.train.config import WARMUP_FRACTION
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_a_36_frame_dataset_with_the_default_preset_trains_every_fold_past_the_warm_up(tmp_path):
    preset = PRESETS["default"]
    # 6 patients x 2 visits x 3 zones = 36 frames at the default preset's 64x64.
    proc = run_cli("run", "--dataset", "synthetic-lus:patients=6,zones=3,size=64", "--strategy", "threshold:0.5",
                   "--reference", "none", "--no-tasks", "--folds", "3", "--device", "cpu",
                   "--out", str(tmp_path / "run"), "--json", str(tmp_path / "lb.json"))
    assert proc.returncode == 0, proc.stderr
    folds = json.loads((tmp_path / "lb.json").read_text())["folds"]
    assert len(folds) == preset.seeds * 3
    epochs = preset.train["epochs"]
    warm_up = math.ceil(WARMUP_FRACTION * epochs)
    for fold in folds:
        # Weights from inside the warm-up (epoch 0 was what early stopping used to keep) are never selected.
        assert fold["best_epoch"] + 1 >= warm_up, fold
        assert fold["epochs_run"] > warm_up, fold
    # With 4 training patients per fold, the validation split cannot judge epochs: early stopping is off.
    assert all(f["stop_reason"].startswith("all epochs ran") for f in folds)
    assert "too small to judge epochs: early stopping off" in proc.stderr
