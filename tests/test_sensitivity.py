"""The sensitivity (power) analysis: controlled degradation of reference masks, the tasks on each level, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.evaluate.segmetrics import frame_metrics
from lusbench.evaluate.sensitivity import (
    INTERVAL,
    DegradationError,
    Degrader,
    frame_dice,
    reference_masks,
    run_sensitivity,
    sensitivity_figure,
    separated,
    table_lines,
)
from lusbench_builtins.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic_dataset(patients="40", size="32", zones="4")


@pytest.fixture(scope="module")
def degrader(dataset):
    return Degrader(dataset.true_masks, seed=0)


def test_strength_zero_is_the_reference_and_dice_falls_with_strength(dataset, degrader):
    assert np.array_equal(degrader.masks(0.0), dataset.true_masks)
    dice = [degrader.dice(t) for t in np.linspace(0.0, 1.0, 11)]
    assert dice[0] == 1.0 and dice[-1] < 0.5
    assert np.all(np.diff(dice) <= 1e-3), np.round(dice, 3)  # common random numbers: a (near) monotone curve


def test_every_kind_of_error_occurs(dataset, degrader):
    truth = dataset.true_masks
    worse = degrader.masks(0.6)
    k = 3  # consolidation: frames without one gain false-positive consolidations, some with one lose it
    has = truth[:, k].any(axis=(1, 2))
    assert (worse[~has, k].any(axis=(1, 2))).sum() > 0
    assert (~worse[has, k].any(axis=(1, 2))).sum() > 0
    kept = has & worse[:, k].any(axis=(1, 2))
    grown = (worse[kept, k] & ~truth[kept, k]).any(axis=(1, 2))
    shrunk = (truth[kept, k] & ~worse[kept, k]).any(axis=(1, 2))
    assert grown.sum() > 0 and shrunk.sum() > 0  # boundaries move out and in


def test_calibration_hits_each_level_within_the_tolerance(degrader):
    for target in (0.9, 0.7, 0.5):
        strength, achieved = degrader.calibrate(target, 0.01)
        assert abs(achieved - target) <= 0.01
        assert achieved == pytest.approx(degrader.dice(strength))
    with pytest.raises(DegradationError):
        degrader.calibrate(0.01, 0.01)


def test_frame_dice_is_the_benchmarks_true_dice(dataset, degrader):
    worse = degrader.masks(0.3)
    metrics = frame_metrics(torch.from_numpy(worse.astype(np.float32)), torch.from_numpy(dataset.confidence_float()),
                            torch.from_numpy(dataset.true_masks), 0.5, dataset.classes)
    true_dice = np.asarray(metrics["true.dice"])
    assert frame_dice(worse, dataset.true_masks) == pytest.approx(float(np.nanmean(true_dice)), abs=1e-9)


def test_expert_labels_are_the_reference_without_true_masks(dataset):
    blind = dataclasses.replace(dataset, true_masks=None)
    masks, source = reference_masks(blind)
    assert source.startswith("expert labels")
    assert np.array_equal(masks, dataset.confidence * 2 >= dataset.confidence_scale)


def test_the_tasks_see_better_segmentations_and_every_metric_has_its_interval(dataset):
    plugins = load_plugins()
    tasks = [plugins.tasks.create(name) for name in plugins.tasks.names()]
    doc = run_sensitivity(dataset, tasks, (1.0, 0.5), seed=0)
    assert doc["interval"] == INTERVAL and doc["reference"] == "true masks" and doc["patients"] == 40
    assert set(doc["tasks"]) == {"sf-ratio", "sf-change", "readmission-30d"}
    best, worst = doc["levels"]
    assert best["dice"] == 1.0 and abs(worst["dice"] - 0.5) <= 0.01
    for row in doc["levels"]:
        for name, m in row["metrics"].items():
            assert m["low"] <= m["value"] <= m["high"], name
    # The S/F error of the true masks is smaller than at Dice 0.5, beyond the intervals.
    assert best["metrics"]["sf_ratio.mae"]["value"] < worst["metrics"]["sf_ratio.mae"]["value"]
    assert separated(doc, "sf_ratio.mae", 1.0, 0.5)
    lines = table_lines(doc)
    assert len(lines) == 3 and "sf_ratio.mae" in lines[0]
    figure = sensitivity_figure(json.loads(json.dumps(doc)))  # from the JSON, as a report reads it
    assert len(figure.axes) == 3


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lusbench.cli", "data", "sensitivity", *args], capture_output=True,
                          text=True)


def test_cli_prints_the_table_and_writes_json_and_png(tmp_path):
    out, js = tmp_path / "curve.png", tmp_path / "curve.json"
    proc = _cli("synthetic-lus:patients=20,size=32,zones=2", "--levels", "1", "0.7", "--task", "sf-ratio",
                "--out", str(out), "--json", str(js))
    assert proc.returncode == 0, proc.stderr
    assert "patient bootstrap" in proc.stdout and "sf_ratio.r2" in proc.stdout
    doc = json.loads(js.read_text())
    assert [row["target_dice"] for row in doc["levels"]] == [1.0, 0.7] and list(doc["tasks"]) == ["sf-ratio"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "needle"), [
    (["--levels", "1.5"], "--levels"),
    (["--levels", "0.8", "0.8"], "--levels"),
    (["--tolerance", "0"], "--tolerance"),
    (["--json", "/nonexistent-dir/x.json"], "/nonexistent-dir"),
    (["--task", "no-such-task"], "no-such-task"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    proc = _cli("synthetic-lus:patients=6,size=32,zones=2", *args)
    assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
