"""Rater strategies through a real run: they train on rater masks, refuse data without them, and only they retrain
when the rater masks change."""

import io
import re
import sys

import pytest
from conftest import run_cli

from lusbench.api.plugins import load_plugins
from lusbench.exec.plan import RunPlan
from lusbench.exec.runner import run
from lusbench.progress import Progress

# A dataset whose rater masks (and nothing else) change with its argument: one rater pixel is flipped for V=1.
PLUGIN = '''
import lusbench
from lusbench_builtins.synthetic import make_synthetic_dataset

def variant(v="0"):
    dataset = make_synthetic_dataset(patients="6", size="32", raters="3")
    if v == "1":
        dataset.rater_masks[0, 1, 2, 5, 5] = not dataset.rater_masks[0, 1, 2, 5, 5]
    return dataset

@lusbench.hookimpl
def register_datasets(register):
    register("rater-variant", variant)
'''


@pytest.fixture
def variant_plugins(tmp_path, monkeypatch):
    (tmp_path / "rv_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield load_plugins(["rv_plugin"])
    sys.modules.pop("rv_plugin", None)


def _run(plugins, run_dir, dataset, strategies):
    plan = RunPlan(strategies=strategies, dataset=dataset, model="unet:resnet18,depth=3", tasks=[], preset="test",
                   seeds=[0], folds=2, train={"epochs": 1, "batch_size": 16, "lr": 1e-2, "weight_decay": 1e-4,
                                              "patience": None, "augment": True, "amp": True},
                   val_fraction=0.2, eval_threshold=0.5, device="cpu", run_dir=run_dir, reference=None)
    stream = io.StringIO()
    doc = run(plan, plugins, Progress(stream=stream))
    lines = stream.getvalue().splitlines()
    return doc, [m.group(1) for line in lines if (m := re.match(r"\[\d+/\d+\] (\S+) seed \d+ fold \d+: dice", line))], lines


def test_changed_rater_masks_retrain_only_the_strategies_that_use_them(variant_plugins, tmp_path):
    strategies = ["threshold:0.5", "random-rater", "staple:soft"]
    doc, trained, _ = _run(variant_plugins, tmp_path / "run", "rater-variant:0", strategies)
    assert sorted(trained) == sorted(s for s in strategies for _ in range(2))
    assert {r["strategy"] for r in doc["rows"]} >= set(strategies)
    _, trained, lines = _run(variant_plugins, tmp_path / "run", "rater-variant:1", strategies)
    assert sorted(trained) == ["random-rater"] * 2 + ["staple:soft"] * 2
    assert "retraining 2 folds of random-rater: the dataset content changed" in lines


def test_a_rater_strategy_on_data_without_raters_fails_before_training(tmp_path):
    proc = run_cli("run", "--preset", "quick", "--dataset", "synthetic-lus:patients=6,size=32", "--strategy",
                   "threshold:0.5", "--strategy", "staple:0.5", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == ("lusbench run: error: strategy 'staple:0.5' trains on per-rater masks, and dataset "
                           "'synthetic-lus:patients=6,size=32' has none (use a dataset with rater masks, e.g. "
                           "synthetic-lus:raters=3)")
    assert not (tmp_path / "run" / "leaderboard.json").exists() and "epoch" not in proc.stdout
