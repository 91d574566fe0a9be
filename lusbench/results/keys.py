"""Record keys: what identifies a stored unit of work, so that a rerun reuses exactly what is still valid.

A **trained fold** (strategy x seed x fold) is keyed by everything that can change its weights, and nothing
else (:func:`training_parts`):

- the dataset's content: a hash of the fields training reads (:data:`lusbench.data.dataset.TRAINING_FIELDS`,
  plus the rater masks for a strategy that trains on them: :func:`training_fields`), not its name, so a file
  replaced at the same path retrains; and the source of the dataset's class when a
  plugin subclasses ``LUSDataset`` (the code that *made* the dataset is not needed: its output is hashed);
- the model and the strategy: their names, the bytes of every file they name by a :class:`~pathlib.Path`
  attribute (a model's ``weights=`` file), and the source of the plugin package that defines each of them
  (:func:`plugin_code`);
- the training settings (those of ``TrainConfig``, ``folds``, ``val_fraction``), the torch thread count, the
  device and the effective precision, and the versions of torch, segmentation-models-pytorch, timm and numpy;
- the code that trains: the lusbench modules of :data:`TRAINING_CODE`. Not the rest of lusbench: the store,
  the evaluation, the leaderboard, ``check`` and the report never change a weight.

Seed, fold, dataset name, model name and strategy name are columns of the record key beside the hash.

A fold's **evaluation** (frame metrics, calibration) is recomputed from its stored out-of-fold probabilities
and is keyed by its training key plus :func:`evaluation_parts`: the evaluation threshold, the whole dataset's
content (true masks, clinical tables), the lusbench modules of :data:`EVALUATION_CODE` and the versions of the
numeric libraries. A downstream task's record adds the task's name, files and plugin code. So a new
evaluation threshold or an edit to the metrics re-evaluates stored folds and retrains none.

Every record stores its parts; :func:`describe_change` names the parts that differ from the last training
of the same fold, for the run's "retraining ...: the dataset content changed" notice.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FunctionType
from typing import TYPE_CHECKING, Any

from lusbench import __version__
from lusbench.data.dataset import TRAINING_FIELDS
from lusbench.results.store import RecordKey

if TYPE_CHECKING:
    from lusbench.api.plugins import Plugins
    from lusbench.data.dataset import LUSDataset

MANIFEST = "last_run"

#: The lusbench source that decides a trained fold's weights, relative to the package: spec parsing and the
#: registry (what object a spec builds), the data stage (the dataset class, confidence binarization, the folds),
#: the whole training stage, the grid (validation split, seeds, the stored 8-bit probabilities) and the cell a worker
#: trains (threads, the training call).
#: Not ``api/plugins.py`` or ``api/hookspecs.py`` (loading and hook declarations; which plugin serves a name is
#: keyed by that plugin's own code), nor ``__init__.py`` (re-exports and the version number).
TRAINING_CODE: tuple[str, ...] = ("api/specs.py", "api/registry.py", "data", "train", "exec/grid.py", "exec/cells.py")
#: The lusbench source that turns stored probabilities into metrics and task results. The statistics, the
#: leaderboard, ``check`` and the report read the records and are recomputed on every run, so they key nothing.
EVALUATION_CODE: tuple[str, ...] = ("evaluate",)
#: Distributions whose version can change a trained fold's weights, and an evaluation's numbers.
TRAINING_LIBRARIES: tuple[str, ...] = ("torch", "segmentation-models-pytorch", "timm", "numpy")
EVALUATION_LIBRARIES: tuple[str, ...] = ("torch", "numpy", "scipy", "scikit-learn")


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def library_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None where it is not installed), from the package metadata:
    nothing is imported."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def source_fingerprint(root: Path, paths: Sequence[str]) -> str:
    """Hash of the ``.py`` files at ``paths`` (files, or folders searched recursively) under ``root``, with
    their paths relative to ``root``: a copy of the same tree elsewhere has the same fingerprint."""
    digest = hashlib.sha256()
    for path in paths:
        target = root / path
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def lusbench_code(paths: Sequence[str]) -> str:
    """Fingerprint of the installed lusbench modules at ``paths`` (:data:`TRAINING_CODE`, :data:`EVALUATION_CODE`)."""
    import lusbench

    return source_fingerprint(Path(lusbench.__file__).parent, paths)


def plugin_code(*objects: Any) -> str:
    """Fingerprint of the source that defines ``objects`` (a plugin's object and the factory that made it):
    for each, the whole top-level package of the module defining it (the object's class, the factory itself),
    so a helper module of the plugin counts too; a plugin that is one module is that file. lusbench's own
    classes are left out (:data:`TRAINING_CODE` and :data:`EVALUATION_CODE` cover them), and so is every other
    plugin: installing or editing one changes no key but its own."""
    roots: set[Path] = set()
    for obj in objects:
        # A factory is a function or a class; anything else is the object it made, defined by its class.
        owner = obj if isinstance(obj, (type, FunctionType)) else type(obj)
        top = (getattr(owner, "__module__", None) or "").partition(".")[0]
        module = sys.modules.get(top)
        if not top or top == "lusbench" or module is None:
            continue
        package_dirs = getattr(module, "__path__", None)
        if package_dirs is not None:
            roots.update(Path(d) for d in package_dirs)
        elif getattr(module, "__file__", None):
            roots.add(Path(module.__file__))
    digest = hashlib.sha256()
    for root in sorted(roots):
        digest.update(source_fingerprint(root.parent, [root.name]).encode())
    return digest.hexdigest()[:16]


def input_files(obj: Any) -> dict[str, str]:
    """SHA-256 of every existing file that ``obj`` names by a :class:`~pathlib.Path` attribute (e.g. a model's
    ``weights=`` file), by path: the same path with other bytes is another input."""
    found = {}
    for value in getattr(obj, "__dict__", {}).values():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(path, Path) and path.is_file():
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
                found[str(path)] = digest.hexdigest()[:16]
    return found


def plugin_identity(obj: Any, factory: Any) -> dict[str, Any]:
    """A strategy's, model's or task's part of a key: its name, the files it reads, its plugin's source."""
    return {"name": obj.name, "files": input_files(obj), "code": plugin_code(obj, factory)}


def training_fields(strategy: Any) -> tuple[str, ...]:
    """The dataset fields a fold of ``strategy`` is trained from: :data:`TRAINING_FIELDS`, and the rater masks for a
    strategy that sets ``needs_raters`` (so new rater masks retrain it, and only it)."""
    return (*TRAINING_FIELDS, "rater_masks") if getattr(strategy, "needs_raters", False) else TRAINING_FIELDS


def runtime_parts(device: Any, amp: bool, threads: int | None = None) -> dict[str, Any]:
    """What of the machine changes a trained fold's weights: thread count (``threads``, the count the executor's
    cells train with; default this process's), device, precision, library versions."""
    import torch

    from lusbench.train.engine import amp_dtype, precision_name

    name = device.type if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})"
    return {
        # The same seed gives other weights at another intra-op thread count (reductions split differently).
        "torch thread count": threads if threads is not None else torch.get_num_threads(),
        "device": name,
        # As lusbench.train.engine decides it: bf16 or fp16 autocast only with amp on CUDA.
        "precision": precision_name(amp_dtype(device, amp)),
        "library versions": library_versions(TRAINING_LIBRARIES),
    }


def training_parts(dataset_hash: str, dataset_code: str, model: dict[str, Any], strategy: dict[str, Any],
                   settings: dict[str, Any], runtime: dict[str, Any], code: str) -> dict[str, Any]:
    """Everything a trained fold of ``strategy`` is keyed by besides seed and fold (see the module docstring);
    the keys are the labels :func:`describe_change` uses. ``dataset_code`` is :func:`plugin_code` of the dataset
    object: a plugin's subclass of ``LUSDataset`` could change what training reads; the code that *made* the
    dataset is not needed, its output is hashed."""
    return {
        "dataset content": dataset_hash,
        "dataset class code": dataset_code,
        "model": model["name"],
        "model files": model["files"],
        "model plugin code": model["code"],
        "strategy": strategy["name"],
        "strategy files": strategy["files"],
        "strategy plugin code": strategy["code"],
        "training settings": settings,
        **runtime,
        "lusbench training code": code,
    }


def reference_parts(row: str, code: str) -> dict[str, Any]:
    """The "training" part of a reference row's key: nothing is trained, its maps come from the dataset (whose
    content is in the evaluation parts) by the code of :data:`TRAINING_CODE`."""
    return {"reference": row, "lusbench training code": code}


def evaluation_parts(dataset: LUSDataset, dataset_code: str, eval_threshold: float) -> dict[str, Any]:
    """What a fold's evaluation is keyed by besides its training key (see the module docstring)."""
    return {
        "eval threshold": eval_threshold,
        "dataset content": dataset.content_hash(),
        "dataset class code": dataset_code,
        "lusbench evaluation code": lusbench_code(EVALUATION_CODE),
        "library versions": library_versions(EVALUATION_LIBRARIES),
    }


def task_parts(evaluation_key: str, task: dict[str, Any]) -> dict[str, Any]:
    """A downstream task's record: the evaluation's key plus the task's own identity."""
    return {"evaluation": evaluation_key, "task": task["name"], "task files": task["files"],
            "task plugin code": task["code"]}


# Parts whose values are short and readable: the notice shows them; the others are hashes, named only.
_SHOWN = {"training settings", "torch thread count", "device", "precision", "library versions", "eval threshold"}


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The parts that differ, for a notice: ``the dataset content changed; the torch thread count changed (1 -> 2)``."""
    changes = []
    for part in dict.fromkeys([*new, *old]):
        before, after = old.get(part), new.get(part)
        if before == after:
            continue
        detail = ""
        if isinstance(before, dict) and isinstance(after, dict):
            inner = [k for k in dict.fromkeys([*after, *before]) if before.get(k) != after.get(k)]
            detail = ", ".join(f"{k} {before.get(k)} -> {after.get(k)}" if part in _SHOWN else k for k in inner)
        elif part in _SHOWN:
            detail = f"{before} -> {after}"
        changes.append(f"the {part} changed" + (f" ({detail})" if detail else ""))
    return "; ".join(changes)


def environment_info(device: Any, plugins: Plugins) -> dict[str, Any]:
    """Where a run ran, for the leaderboard (not a key: the keys hold the parts of it that matter)."""
    import torch

    info = {
        "lusbench": __version__,
        "torch": torch.__version__,
        "device": device.type,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "plugins": {p.name: p.source for p in plugins.loaded if p.error is None},
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(dict.fromkeys([*TRAINING_LIBRARIES, *EVALUATION_LIBRARIES])),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


@dataclass(frozen=True)
class RunKeys:
    """The record keys of one run (from its manifest): a training key per row, the evaluation key, a key per task."""

    dataset: str
    model: str
    train: dict[str, str]
    evaluation: str
    tasks: dict[str, str]

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> RunKeys:
        config, keys = manifest["config"], manifest["keys"]
        return cls(config["dataset"], config["model"], keys["train"], keys["evaluation"], keys["tasks"])

    def trained(self, row: str, seed: int, fold: int) -> RecordKey:
        """The trained fold: its record holds the training history, its artifacts the probabilities and weights."""
        return RecordKey(self.dataset, self.model, row, seed, fold, "", self.train[row], "")

    def cell(self, row: str, seed: int, fold: int) -> RecordKey:
        """The fold's evaluation (frames, metrics, calibration); its artifacts are the trained fold's."""
        return RecordKey(self.dataset, self.model, row, seed, fold, "", self.train[row], self.evaluation)

    def task(self, row: str, seed: int, task: str) -> RecordKey:
        return RecordKey(self.dataset, self.model, row, seed, -1, task, self.train[row], self.tasks[task])
