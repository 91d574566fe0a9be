"""Every hook implemented by one outside plugin module, loaded with -p and run through the real CLI.

The dataset, model, strategy and task below are all defined outside lusbench, with classes lusbench has
never heard of, so this also proves the harness knows no concrete plugin.
"""

import json
import textwrap

import numpy as np
import pytest

from tests.conftest import run_cli

PLUGIN = textwrap.dedent(
    '''
    import json
    import numpy as np
    import lusbench
    from lusbench.data.dataset import LUSDataset
    from lusbench.evaluate.metricdefs import MetricDef
    from lusbench.train.models import ModelBuilder
    from lusbench.train.strategy import LabelStrategy
    from lusbench.evaluate.tasks import DownstreamTask


    def tiny_squares(patients="8", size="16"):
        """Bright squares on noise, one class, confidence highest in the square's core."""
        n_patients, size = int(patients), int(size)
        if n_patients < 2:
            raise ValueError(f"patients must be at least 2, got {patients}")
        rng = np.random.default_rng(0)
        frames = n_patients * 3
        images = rng.integers(0, 60, (frames, size, size)).astype(np.uint8)
        confidence = np.zeros((frames, 1, size, size), np.uint8)
        truth = np.zeros((frames, 1, size, size), bool)
        for i in range(frames):
            y, x = rng.integers(2, size - 8, 2)
            images[i, y:y + 6, x:x + 6] += 150
            truth[i, 0, y:y + 6, x:x + 6] = True
            confidence[i, 0, y - 1:y + 7, x - 1:x + 7] = 3
            confidence[i, 0, y:y + 6, x:x + 6] = 7
            confidence[i, 0, y + 1:y + 5, x + 1:x + 5] = 10
        patient = np.repeat(np.arange(n_patients), 3)
        return LUSDataset(name=f"tiny-squares:patients={n_patients},size={size}", images=images, confidence=confidence,
                          confidence_scale=10, patient=patient, visit=np.ones(frames, np.int64),
                          zone=np.tile(np.arange(3), n_patients), classes=("blob",), true_masks=truth)


    class TinyConv(ModelBuilder):
        """Two convolutions: enough to find bright squares."""
        name = "tinyconv"

        def build(self, in_channels, classes):
            import torch.nn as nn
            return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))


    class Half(LabelStrategy):
        """Soft targets at half strength."""
        name = "half"

        def targets(self, confidence):
            return confidence * 0.5, None


    class Probe(DownstreamTask):
        """Mean of the first frame feature, repeated twice: enough to see it on the leaderboard."""
        name = "probe"
        prefix = "probe"

        def metric_defs(self):
            return [MetricDef("probe.first_feature", True, "mean of the first frame feature")]

        def skip_reason(self, dataset):
            return None

        def evaluate(self, features, dataset, seed):
            value = float(np.nanmean(features.frame[:, 0]))
            return {"probe.first_feature": [value, value]}


    @lusbench.hookimpl
    def register_datasets(register):
        register("tiny-squares", tiny_squares)


    @lusbench.hookimpl
    def register_models(register):
        register("tinyconv", TinyConv)


    @lusbench.hookimpl
    def register_label_strategies(register):
        register("half", Half)


    @lusbench.hookimpl
    def register_downstream_tasks(register):
        register("probe", Probe)


    @lusbench.hookimpl
    def run_started(config, run_dir):
        (run_dir / "events.jsonl").open("a").write(json.dumps({"event": "started", "config": config}) + "\\n")


    @lusbench.hookimpl
    def run_finished(leaderboard, run_dir):
        rows = [r["strategy"] for r in leaderboard["rows"]]
        (run_dir / "events.jsonl").open("a").write(json.dumps({"event": "finished", "rows": rows}) + "\\n")


    @lusbench.hookimpl
    def run_failed(config, run_dir, error):
        (run_dir / "events.jsonl").open("a").write(json.dumps({"event": "failed", "error": error}) + "\\n")
    '''
)


def test_outside_plugin_implementing_every_hook_runs_end_to_end(tmp_path):
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run_cli("-p", "tiny_plugin", "plugins", "--json", env=env)
    listed = json.loads(proc.stdout)
    assert {"name": "tiny-squares", "plugin": "tiny_plugin",
            "summary": "Bright squares on noise, one class, confidence highest in the square's core."} in listed["datasets"]

    run_dir = tmp_path / "run"
    args = ["-p", "tiny_plugin", "run", "--dataset", "tiny-squares:patients=6", "--model", "tinyconv",
            "--strategy", "half", "--strategy", "threshold:0.5", "--task", "probe", "--seeds", "1", "--folds", "2",
            "--epochs", "2", "--out", str(run_dir), "--json", str(tmp_path / "lb.json")]
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "lb.json").read_text())
    assert doc == json.loads((run_dir / "leaderboard.json").read_text())
    assert doc["config"]["dataset"] == "tiny-squares:patients=6,size=16"
    assert doc["config"]["model"] == "tinyconv"
    rows = {r["strategy"]: r for r in doc["rows"]}
    assert {"half", "threshold:0.5"} <= set(rows)
    assert np.isfinite(rows["half"]["metrics"]["dice.blob"]["mean"])
    assert np.isfinite(rows["half"]["metrics"]["probe.first_feature"]["mean"])

    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["started", "finished"]
    assert events[0]["config"]["config_hash"] == doc["config"]["config_hash"]
    assert set(events[1]["rows"]) == set(rows)


def test_bad_outside_dataset_argument_is_one_line(tmp_path):
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    proc = run_cli("-p", "tiny_plugin", "run", "--dataset", "tiny-squares:patients=1", "--strategy", "half",
                   "--model", "tinyconv", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "lusbench run: error: --dataset 'tiny-squares:patients=1': patients must be at least 2, got 1"


def test_event_hook_failure_is_one_line_naming_the_plugin(tmp_path):
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    (tmp_path / "failing_logger.py").write_text(
        "import lusbench\n\n@lusbench.hookimpl\ndef run_started(config, run_dir):\n    raise ConnectionError('tracker down')\n"
    )
    proc = run_cli("-p", "tiny_plugin", "-p", "failing_logger", "run", "--dataset", "tiny-squares:patients=6",
                   "--model", "tinyconv", "--strategy", "half", "--task", "probe", "--folds", "2", "--epochs", "1",
                   "--out", str(tmp_path / "run"), env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "lusbench run: error: plugin 'failing_logger' failed in run_started: ConnectionError: tracker down")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "leaderboard.json").exists()


BROKEN = textwrap.dedent(
    '''
    import lusbench
    from lusbench.train.models import ModelBuilder
    from lusbench.train.strategy import LabelStrategy


    class Flat(LabelStrategy):
        """Crops the last column: the wrong shape."""
        name = "flat"

        def targets(self, confidence):
            return confidence[..., :-1], None


    class Explodes(LabelStrategy):
        """Raises inside targets()."""
        name = "explodes"

        def targets(self, confidence):
            raise ZeroDivisionError("no confidence")


    class Boolean(LabelStrategy):
        """Hard targets left as bool: the loss needs floats."""
        name = "boolean"

        def targets(self, confidence):
            return confidence >= 0.5, None


    class IntegerWeight(LabelStrategy):
        """Float targets, but an integer weight."""
        name = "integer-weight"

        def targets(self, confidence):
            return confidence, (confidence > 0).long()


    def missing_column():
        """A factory with a bug: it looks up a key that is not there."""
        return {}["column"]


    class Diverges(LabelStrategy):
        """Sound targets, but a loss that turns NaN: what an exploding custom loss does to training."""
        name = "diverges"

        def targets(self, confidence):
            return confidence, None

        def loss(self, logits, target, weight):
            return super().loss(logits, target, weight) * float("nan")


    class Boom(ModelBuilder):
        """Cannot even be built."""
        name = "boom"

        def build(self, in_channels, classes):
            raise RuntimeError("no weights file")


    class Halving(ModelBuilder):
        """Halves the image: never the segmentation's size."""
        name = "halving"

        def build(self, in_channels, classes):
            import torch.nn as nn
            return nn.Conv2d(in_channels, classes, 3, stride=2, padding=1)


    @lusbench.hookimpl
    def register_label_strategies(register):
        register("flat", Flat)
        register("explodes", Explodes)
        register("boolean", Boolean)
        register("integer-weight", IntegerWeight)
        register("missing-column", missing_column)
        register("diverges", Diverges)


    @lusbench.hookimpl
    def register_models(register):
        register("halving", Halving)
        register("boom", Boom)
    '''
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "flat"],
         "lusbench run: error: strategy 'flat' (broken_plugin.Flat) returned a target of shape (8, 1, 16, 15), "
         "expected (8, 1, 16, 16)"),
        (["--strategy", "explodes"],
         "lusbench run: error: strategy 'explodes' (broken_plugin.Explodes) failed in targets(): ZeroDivisionError: "
         "no confidence"),
        (["--strategy", "boolean"],
         "lusbench run: error: strategy 'boolean' (broken_plugin.Boolean) returned a target of dtype bool, expected a "
         "floating-point tensor (e.g. target.float())"),
        (["--strategy", "integer-weight"],
         "lusbench run: error: strategy 'integer-weight' (broken_plugin.IntegerWeight) returned a weight of dtype int64, "
         "expected a floating-point tensor (e.g. weight.float())"),
        (["--strategy", "half", "--model", "halving"],
         "lusbench run: error: --model 'halving' returned (2, 1, 8, 8) for input (2, 1, 16, 16), expected (2, 1, 16, 16)"),
    ],
)
def test_broken_strategy_or_model_is_one_line_before_training(tmp_path, args, message):
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text(BROKEN)
    base = ["-p", "tiny_plugin", "-p", "broken_plugin", "run", "--dataset", "tiny-squares:patients=6", "--model",
            "tinyconv", "--task", "probe", "--folds", "2", "--epochs", "1", "--out", str(tmp_path / "run")]
    proc = run_cli(*base, *args, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == message
    assert "Traceback" not in proc.stderr


def test_a_factory_that_raises_anything_is_one_line_naming_the_spec_and_the_plugin(tmp_path):
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text(BROKEN)
    proc = run_cli("-p", "tiny_plugin", "-p", "broken_plugin", "run", "--dataset", "tiny-squares:patients=6",
                   "--model", "tinyconv", "--strategy", "missing-column", "--out", str(tmp_path / "run"),
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr == ("lusbench run: error: --strategy 'missing-column': plugin 'broken_plugin' failed in its "
                           "factory: KeyError: 'column'\n")


def test_a_diverging_training_stops_with_one_line_naming_strategy_seed_and_fold(tmp_path):
    # Before: a NaN loss trained on silently and its NaN metrics were dropped by the NaN-aware means.
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text(BROKEN)
    proc = run_cli("-p", "tiny_plugin", "-p", "broken_plugin", "run", "--dataset", "tiny-squares:patients=6",
                   "--model", "tinyconv", "--strategy", "diverges", "--reference", "none", "--task", "probe",
                   "--folds", "2", "--seeds", "2", "--epochs", "2", "--out", str(tmp_path / "run"),
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "lusbench run: error: diverges seed 0 fold 0: training diverged at epoch 1: training loss nan, "
        "validation loss nan (try a lower learning rate)")
    assert not (tmp_path / "run" / "leaderboard.json").exists()


def test_run_failed_closes_what_run_started_opened(tmp_path):
    (tmp_path / "tiny_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text(BROKEN)
    run_dir = tmp_path / "run"
    proc = run_cli("-p", "tiny_plugin", "-p", "broken_plugin", "run", "--dataset", "tiny-squares:patients=6",
                   "--model", "boom", "--strategy", "half", "--task", "probe", "--folds", "2", "--epochs", "1",
                   "--out", str(run_dir), env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    message = "--model 'boom' cannot segment 16x16 images: RuntimeError: no weights file"
    assert proc.stderr.splitlines()[-1] == f"lusbench run: error: {message}"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["started", "failed"]
    assert events[1]["error"] == f"UserError: {message}"
