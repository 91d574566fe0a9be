"""Cache keys: a rerun retrains exactly the folds whose training inputs changed, re-evaluates (never retrains)
what only evaluation reads, and says which part of the key changed.

The runs are real (torch training through the Python API) and tiny: 8 patients at 32x32, one seed, two folds,
one epoch, no downstream tasks; a few seconds each on two CPU cores, so none is marked slow.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

import lusbench
from lusbench.api.plugins import Plugins, load_plugins
from lusbench.data.dataset import TRAINING_FIELDS
from lusbench.errors import PluginError
from lusbench.exec.plan import RunPlan, resolve
from lusbench.exec.runner import run
from lusbench.progress import Progress
from lusbench.results.keys import (
    EVALUATION_CODE,
    TRAINING_CODE,
    TRAINING_LIBRARIES,
    describe_change,
    library_versions,
    lusbench_code,
    plugin_code,
    runtime_parts,
    short_hash,
    source_fingerprint,
    training_parts,
)

TINY_DATASET = "synthetic-lus:patients=8,size=32"
TINY_MODEL = "unet:resnet18,depth=3"
TINY_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 1e-2, "weight_decay": 1e-4, "patience": 1, "augment": True,
              "amp": True}


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    """Each test writes its own ``ck_*`` plugin packages: drop the imported ones, or the next test would get them."""
    yield
    for name in [n for n in sys.modules if n.startswith("ck_")]:
        del sys.modules[name]


def _plan(run_dir: Path, strategies: list[str], dataset: str = TINY_DATASET, model: str = TINY_MODEL,
          eval_threshold: float = 0.5) -> RunPlan:
    return RunPlan(strategies=strategies, dataset=dataset, model=model, tasks=[], preset="test", seeds=[0], folds=2,
                   train=TINY_TRAIN, val_fraction=0.2, eval_threshold=eval_threshold, device="cpu", run_dir=run_dir,
                   reference=None)


def _run(plugins: Plugins, run_dir: Path, strategies: list[str], **plan: object) -> tuple[dict, list[str]]:
    """Run a tiny plan; returns the leaderboard and the progress lines."""
    stream = io.StringIO()
    doc = run(_plan(run_dir, strategies, **plan), plugins, Progress(stream=stream))
    return doc, stream.getvalue().splitlines()


def _trained(lines: list[str]) -> list[str]:
    """``strategy seed S fold F`` of every fold the run trained (its ``[i/n] ...: dice ...`` line)."""
    return [m.group(1) for line in lines if (m := re.match(r"\[\d+/\d+\] (.+ seed \d+ fold \d+): dice", line))]


def _dice(doc: dict) -> dict[str, float]:
    return {row["strategy"]: row["metrics"]["dice"]["mean"] for row in doc["rows"] if not row["label_row"]}


def _write_package(root: Path, name: str, files: dict[str, str]) -> Path:
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    for file, source in files.items():
        (package / file).write_text(textwrap.dedent(source))
    return package


def _append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes nothing the code does\n")


# -- the dataset's content -------------------------------------------------------------------------------------

NPZ_PLUGIN = """
    import numpy as np

    import lusbench
    from lusbench.data.dataset import LUSDataset


    def npz_dataset(path):
        \"\"\"A dataset read from an .npz file.\"\"\"
        with np.load(path) as data:
            return LUSDataset(name="npz-lus", images=data["images"], confidence=data["confidence"], confidence_scale=10,
                              patient=data["patient"], visit=data["visit"], zone=data["zone"])


    @lusbench.hookimpl
    def register_datasets(register):
        register("npz-lus", npz_dataset)
"""


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with path.open("wb") as handle:  # the same path, new bytes: what replacing a dataset file does
        np.savez(handle, **arrays)


def test_a_dataset_file_replaced_at_the_same_path_retrains_only_when_training_data_changed(tmp_path, monkeypatch):
    _write_package(tmp_path / "site", "ck_npz", {"__init__.py": NPZ_PLUGIN})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins = load_plugins(["ck_npz"])
    source = plugins.datasets.create(TINY_DATASET)
    arrays = {name: getattr(source, name) for name in ("images", "confidence", "patient", "visit", "zone")}
    data = tmp_path / "data.npz"
    _save_npz(data, **arrays)
    spec = f"npz-lus:path={data}"

    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], dataset=spec)
    assert len(_trained(lines)) == 2
    # The zones feed only the downstream tasks' features: the folds are re-evaluated, not retrained.
    _save_npz(data, **{**arrays, "zone": arrays["zone"][::-1].copy()})
    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], dataset=spec)
    assert _trained(lines) == [] and "evaluating 2 stored folds from their out-of-fold probabilities" in lines
    # New images under the same name and path: every fold is stale.
    _save_npz(data, **{**arrays, "zone": arrays["zone"][::-1].copy(), "images": 255 - arrays["images"]})
    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], dataset=spec)
    assert _trained(lines) == ["threshold:0.5 seed 0 fold 0", "threshold:0.5 seed 0 fold 1"]
    assert "retraining 2 folds of threshold:0.5: the dataset content changed" in lines


def test_the_dataset_content_hash_covers_every_field_and_training_reads_only_some():
    dataset = load_plugins().datasets.create(TINY_DATASET)
    full, training = dataset.content_hash(), dataset.content_hash(TRAINING_FIELDS)
    dataset.zone = dataset.zone[::-1].copy()
    assert dataset.content_hash() != full and dataset.content_hash(TRAINING_FIELDS) == training
    dataset.visits = {**dataset.visits, "sf_ratio": dataset.visits["sf_ratio"] + 1}
    changed = dataset.content_hash()
    assert changed != full and dataset.content_hash(TRAINING_FIELDS) == training
    confidence = dataset.confidence.copy()
    dataset.confidence[0, 0, 0, 0] = (confidence[0, 0, 0, 0] + 1) % 10
    assert dataset.content_hash(TRAINING_FIELDS) != training
    dataset.confidence = confidence
    assert dataset.content_hash(TRAINING_FIELDS) == training
    # The same bytes read as another dtype are other data.
    dataset.patient = dataset.patient.view(dataset.patient.dtype.str.replace("i", "u"))
    assert dataset.content_hash(TRAINING_FIELDS) != training


# -- the model's weights file ----------------------------------------------------------------------------------

def test_a_weights_file_rewritten_at_the_same_path_retrains(tmp_path):
    plugins = load_plugins()
    encoder = plugins.models.create(TINY_MODEL).build(1, 5).encoder
    weights = tmp_path / "encoder.pth"
    torch.save(encoder.state_dict(), weights)
    model = f"{TINY_MODEL},weights={weights}"
    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], model=model)
    assert len(_trained(lines)) == 2
    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], model=model)
    assert _trained(lines) == []
    torch.save({k: v * 0.5 if v.is_floating_point() else v for k, v in encoder.state_dict().items()}, weights)
    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], model=model)
    assert len(_trained(lines)) == 2
    assert f"retraining 2 folds of threshold:0.5: the model files changed ({weights.resolve()})" in lines


# -- the torch thread count ------------------------------------------------------------------------------------

def test_another_torch_thread_count_retrains_and_each_count_keeps_its_folds(tmp_path):
    plugins = load_plugins()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"])
        assert len(_trained(lines)) == 2
        torch.set_num_threads(2)
        _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"])
        assert len(_trained(lines)) == 2
        assert "retraining 2 folds of threshold:0.5: the torch thread count changed (1 -> 2)" in lines
        torch.set_num_threads(1)
        _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"])
        assert _trained(lines) == []
    finally:
        torch.set_num_threads(threads)


# -- plugin code -----------------------------------------------------------------------------------------------

MINE_INIT = """
    import lusbench
    from ck_mine.strategy import MineStrategy


    @lusbench.hookimpl
    def register_label_strategies(register):
        register("mine", MineStrategy)
"""
MINE_STRATEGY = """
    from ck_mine.helpers import cutoff
    from lusbench.train.strategy import LabelStrategy


    class MineStrategy(LabelStrategy):
        name = "mine"

        def targets(self, confidence):
            return (confidence >= cutoff()).float(), None
"""
MINE_HELPERS = """
    def cutoff():
        return 0.4
"""
OTHER_INIT = """
    import lusbench
    from lusbench.train.strategy import LabelStrategy


    class OtherStrategy(LabelStrategy):
        name = "other"

        def targets(self, confidence):
            return confidence, None


    @lusbench.hookimpl
    def register_label_strategies(register):
        register("other", OtherStrategy)
"""


def _two_plugins(site: Path) -> tuple[Path, Path]:
    mine = _write_package(site, "ck_mine", {"__init__.py": MINE_INIT, "strategy.py": MINE_STRATEGY,
                                            "helpers.py": MINE_HELPERS})
    other = _write_package(site, "ck_other", {"__init__.py": OTHER_INIT})
    return mine, other


def test_editing_a_plugin_retrains_only_the_folds_of_its_own_strategy(tmp_path, monkeypatch):
    mine, other = _two_plugins(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins = load_plugins(["ck_mine", "ck_other"])
    first, lines = _run(plugins, tmp_path / "run", ["threshold:0.5", "mine"])
    assert len(_trained(lines)) == 4
    # A plugin that serves nothing in this run: nothing retrains.
    _append_comment(other / "__init__.py")
    _, lines = _run(plugins, tmp_path / "run", ["threshold:0.5", "mine"])
    assert _trained(lines) == [] and [line for line in lines if line.startswith("reusing 4 of 4 trained folds")]
    # A helper module of the strategy's own plugin, not its entry point: only that strategy retrains.
    _append_comment(mine / "helpers.py")
    again, lines = _run(plugins, tmp_path / "run", ["threshold:0.5", "mine"])
    assert _trained(lines) == ["mine seed 0 fold 0", "mine seed 0 fold 1"]
    assert "retraining 2 folds of mine: the strategy plugin code changed" in lines
    assert _dice(again) == _dice(first)  # a comment: the same weights, retrained


def test_plugin_code_is_the_whole_package_of_the_object_and_its_factory(tmp_path, monkeypatch):
    mine, other = _two_plugins(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins = load_plugins(["ck_mine", "ck_other"])
    strategy = plugins.strategies.create("mine")
    factory = type(strategy)
    before = plugin_code(strategy, factory)
    _append_comment(other / "__init__.py")
    assert plugin_code(strategy, factory) == before
    _append_comment(mine / "helpers.py")
    assert plugin_code(strategy, factory) != before
    # lusbench's own classes are keyed by TRAINING_CODE, not as a plugin: the built-in model's key is its package.
    builtin = plugins.models.create(TINY_MODEL)
    assert plugin_code(builtin) == plugin_code(builtin, type(builtin)) != plugin_code(object())


# -- what is not training code ---------------------------------------------------------------------------------

def test_editing_the_report_or_the_metrics_changes_no_training_key(tmp_path):
    tree = tmp_path / "lusbench"
    shutil.copytree(Path(lusbench.__file__).parent, tree, ignore=shutil.ignore_patterns("__pycache__"))
    training, evaluation = source_fingerprint(tree, TRAINING_CODE), source_fingerprint(tree, EVALUATION_CODE)
    assert training == lusbench_code(TRAINING_CODE) and evaluation == lusbench_code(EVALUATION_CODE)
    for path in ("results/report.py", "results/leaderboard.py", "results/check.py", "cli/main.py"):
        _append_comment(tree / path)
    assert source_fingerprint(tree, TRAINING_CODE) == training
    assert source_fingerprint(tree, EVALUATION_CODE) == evaluation
    _append_comment(tree / "evaluate" / "segmetrics.py")
    assert source_fingerprint(tree, TRAINING_CODE) == training
    assert source_fingerprint(tree, EVALUATION_CODE) != evaluation
    for path in ("train/engine.py", "data/folds.py", "exec/grid.py", "exec/cells.py"):
        _append_comment(tree / path)
        assert source_fingerprint(tree, TRAINING_CODE) != training, path
        training = source_fingerprint(tree, TRAINING_CODE)


def test_a_new_eval_threshold_re_evaluates_stored_folds_and_retrains_nothing(tmp_path):
    plugins = load_plugins()
    first, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"])
    assert len(_trained(lines)) == 2
    other, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"], eval_threshold=0.7)
    assert _trained(lines) == [] and "evaluating 2 stored folds from their out-of-fold probabilities" in lines
    assert _dice(other) != _dice(first)
    # Both evaluations are kept: going back evaluates nothing and gives the first numbers.
    back, lines = _run(plugins, tmp_path / "run", ["threshold:0.5"])
    assert _trained(lines) == [] and not [line for line in lines if line.startswith("evaluating")]
    assert _dice(back) == _dice(first)


# -- library versions ------------------------------------------------------------------------------------------

def test_each_training_library_version_is_in_the_training_key():
    versions = library_versions(TRAINING_LIBRARIES)
    assert versions == {name: version(name) for name in ("torch", "segmentation-models-pytorch", "timm", "numpy")}
    runtime = runtime_parts(torch.device("cpu"), amp=True)
    assert runtime["library versions"] == versions and runtime["precision"] == "fp32"
    identity = {"name": "threshold:0.5", "files": {}, "code": "c"}
    settings = {"epochs": 1, "folds": 2, "val_fraction": 0.2}

    def parts(runtime: dict) -> dict:
        return training_parts("data", "class", {**identity, "name": TINY_MODEL}, identity, settings, runtime, "code")

    for library in TRAINING_LIBRARIES:
        bumped = {**runtime, "library versions": {**versions, library: "999.0"}}
        assert short_hash(parts(bumped)) != short_hash(parts(runtime)), library
        assert describe_change(parts(runtime), parts(bumped)) == (
            f"the library versions changed ({library} {versions[library]} -> 999.0)")


# -- names -----------------------------------------------------------------------------------------------------

UNNAMED = """
    import torch

    import lusbench
    from lusbench.evaluate.tasks import DownstreamTask
    from lusbench.train.models import ModelBuilder
    from lusbench.train.strategy import LabelStrategy


    class Unnamed(LabelStrategy):
        def targets(self, confidence):
            return confidence, None


    class UnnamedModel(ModelBuilder):
        def build(self, in_channels, classes):
            return torch.nn.Conv2d(in_channels, classes, 1)


    class UnnamedTask(DownstreamTask):
        def metric_defs(self):
            return []


    @lusbench.hookimpl
    def register_label_strategies(register):
        register("unnamed", Unnamed)


    @lusbench.hookimpl
    def register_models(register):
        register("unnamed-model", UnnamedModel)


    @lusbench.hookimpl
    def register_downstream_tasks(register):
        register("unnamed-task", UnnamedTask)
"""


def test_a_plugin_object_without_a_name_of_its_own_is_rejected(tmp_path, monkeypatch):
    _write_package(tmp_path / "site", "ck_unnamed", {"__init__.py": UNNAMED})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins = load_plugins(["ck_unnamed"])
    named = _plan(tmp_path, ["threshold:0.5"])
    resolve(named, plugins)  # the built-ins all name their objects
    for change, flag, base in ((dict(strategies=["unnamed"]), "--strategy 'unnamed'", "LabelStrategy"),
                               (dict(model="unnamed-model"), "--model 'unnamed-model'", "ModelBuilder"),
                               (dict(tasks=["unnamed-task"]), "--task 'unnamed-task'", "DownstreamTask")):
        plan = _plan(tmp_path, ["threshold:0.5"])
        for field, value in change.items():
            setattr(plan, field, value)
        with pytest.raises(PluginError) as caught:
            resolve(plan, plugins)
        message = str(caught.value)
        assert message.startswith(f"plugin 'ck_unnamed': {flag} made a ") and f"{base}.name" in message
        assert "\n" not in message
