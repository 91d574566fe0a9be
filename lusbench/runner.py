"""The runner: strategies x seeds x folds -> out-of-fold predictions -> metrics -> tasks -> leaderboard.

Every unit of work (one trained fold, one task evaluation) is a record in the run directory's
:class:`~lusbench.store.ResultsStore`; a unit whose record exists is never recomputed (unless
``force``), so an interrupted run resumes where it stopped and adding a strategy trains only it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench import __version__
from lusbench.checkpoints import save_checkpoint
from lusbench.errors import UserError
from lusbench.folds import patient_folds, patient_holdout
from lusbench.metricdefs import MetricDef
from lusbench.models import check_model
from lusbench.plugins import Plugins
from lusbench.results import REFERENCE_EXPERT, REFERENCE_TRUE, RunResults, pool_calibration
from lusbench.store import RecordKey, ResultsStore
from lusbench.strategy import check_strategy

if TYPE_CHECKING:
    from lusbench.dataset import LUSDataset
    from lusbench.progress import Progress

MANIFEST = "last_run"


@dataclass
class RunPlan:
    """What to run, after presets and flags are merged (see ``lusbench run --help``)."""

    strategies: list[str]
    dataset: str
    model: str
    tasks: list[str] | None  # None: every registered task
    preset: str
    seeds: list[int]
    folds: int
    train: dict[str, Any]
    val_fraction: float
    eval_threshold: float
    device: str
    run_dir: Path
    reference: str | None
    force: bool = False


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _resolve(plan: RunPlan, plugins: Plugins) -> tuple[list[Any], str | None, list[Any], Any]:
    """Check the flags and resolve every spec (the model last: it may import smp) before any heavy work,
    so a typo fails in a second, not after training. Returns strategies, reference name, tasks, model."""
    if not 0 < plan.eval_threshold <= 1:
        raise UserError(f"--eval-threshold must be in (0, 1], got {plan.eval_threshold}")
    if plan.folds < 2:
        raise UserError(f"--folds must be at least 2, got {plan.folds}")
    strategies = [plugins.strategies.create(spec) for spec in plan.strategies]
    names = [s.name for s in strategies]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"--strategy given twice: {', '.join(duplicates)}")
    reference = plugins.strategies.create(plan.reference, label="--reference").name if plan.reference else None
    task_specs = plan.tasks if plan.tasks is not None else plugins.tasks.names()
    tasks = [plugins.tasks.create(spec) for spec in task_specs]
    owners: dict[str, str] = {}
    for metric, task_name in [(m.name, t.name) for t in tasks for m in t.metric_defs()]:
        if metric in owners:
            raise UserError(f"--task {owners[metric]} and --task {task_name} both report '{metric}'")
        owners[metric] = task_name
    return strategies, reference, tasks, plugins.models.create(plan.model)


def run(plan: RunPlan, plugins: Plugins, progress: Progress) -> dict[str, Any]:
    """Execute ``plan`` (resuming from the store) and return the leaderboard document it wrote."""
    strategies, reference, tasks, builder = _resolve(plan, plugins)
    names = [s.name for s in strategies]
    dataset = plugins.datasets.create(plan.dataset)
    height, width = dataset.image_shape
    progress.note(f"dataset {dataset.name}: {dataset.n_frames} frames of {height}x{width}, "
                  f"{len(np.unique(dataset.patient))} patients")
    try:
        patient_folds(dataset.patient, plan.folds, 0)
    except ValueError as exc:
        raise UserError(f"--folds {plan.folds}: {exc}") from None
    runnable = []
    for task in tasks:
        reason = task.skip_reason(dataset)
        if reason:
            progress.note(f"task {task.name} skipped: {reason}")
        else:
            runnable.append(task)

    from lusbench import training

    try:
        train_config = training.TrainConfig(**plan.train)
    except TypeError as exc:
        raise UserError(f"training settings: {exc}") from None
    device = training.resolve_device(plan.device)
    environment = environment_info(device, plugins)
    env_key = short_hash({k: environment[k] for k in ("lusbench", "torch", "device", "code")})
    cell_config = {
        "dataset": dataset.name,
        "model": builder.name,
        "folds": plan.folds,
        "eval_threshold": plan.eval_threshold,
        "val_fraction": plan.val_fraction,
        "train": train_config.to_json(),
    }
    cell_hash = short_hash(cell_config)
    config = {
        **cell_config,
        "preset": plan.preset,
        "seeds": plan.seeds,
        "tasks": [t.name for t in runnable],
        "config_hash": short_hash({"cell": cell_hash, "seeds": plan.seeds, "tasks": [t.name for t in runnable]}),
    }
    rows = names + [REFERENCE_EXPERT] + ([REFERENCE_TRUE] if dataset.true_masks is not None else [])
    manifest = {
        "config": config,
        "environment": environment,
        "cell_hash": cell_hash,
        "env_key": env_key,
        "rows": rows,
        "references": [REFERENCE_EXPERT, REFERENCE_TRUE],
        "reference_strategy": reference,
        "frame_patient": dataset.patient.tolist(),
        "classes": list(dataset.classes),
        "metric_defs": [m.to_json() for m in _metric_defs(dataset, runnable)],
    }
    with ResultsStore(plan.run_dir) as store:
        plugins.notify("run_started", config=config, run_dir=plan.run_dir)
        store.set_meta(MANIFEST, manifest)
        grid = _Grid(plan, dataset, builder, strategies, runnable, train_config, device, environment, _Keys.of(manifest),
                     store, progress)
        grid.run_cells()
        grid.run_tasks()
        results = collect_results(store, manifest)

    from lusbench.leaderboard import LEADERBOARD_FILE, build_leaderboard, write_leaderboard

    doc = build_leaderboard(results)
    write_leaderboard(doc, plan.run_dir / LEADERBOARD_FILE)
    plugins.notify("run_finished", leaderboard=doc, run_dir=plan.run_dir)
    return doc


def environment_info(device: Any, plugins: Plugins) -> dict[str, Any]:
    import torch

    info = {
        "lusbench": __version__,
        "torch": torch.__version__,
        "device": device.type,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "plugins": {p.name: p.source for p in plugins.loaded if p.error is None},
        "code": code_fingerprint(plugins),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def code_fingerprint(plugins: Plugins) -> str:
    """Hash of the source of lusbench and of every loaded plugin module.

    Part of the environment key, so results computed by other code (an edited plugin, a new release of a
    dataset package) are never reused, even when no version number changed.
    """
    import lusbench

    roots = {Path(lusbench.__file__).parent}
    for module in plugins.manager.get_plugins():
        source = getattr(module, "__file__", None)
        if source:
            path = Path(source)
            roots.add(path.parent if path.name == "__init__.py" else path)
    digest = hashlib.sha256()
    for root in sorted(roots):
        for file in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(str(file.relative_to(root.parent)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _metric_defs(dataset: LUSDataset, tasks: list[Any]) -> list[MetricDef]:
    from lusbench.segmetrics import segmentation_metric_defs

    defs = segmentation_metric_defs(dataset.classes, dataset.true_masks is not None)
    for task in tasks:
        defs.extend(task.metric_defs())
    return defs


@dataclass(frozen=True)
class _Keys:
    dataset: str
    model: str
    cell_hash: str
    env_key: str

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> _Keys:
        config = manifest["config"]
        return cls(config["dataset"], config["model"], manifest["cell_hash"], manifest["env_key"])

    def cell(self, row: str, seed: int, fold: int) -> RecordKey:
        return RecordKey(self.dataset, self.model, row, seed, fold, "", self.cell_hash, self.env_key)

    def task(self, row: str, seed: int, task: str) -> RecordKey:
        return RecordKey(self.dataset, self.model, row, seed, -1, task, self.cell_hash, self.env_key)


class _Grid:
    """The work of one run; each method skips what the store already holds."""

    def __init__(self, plan: RunPlan, dataset: LUSDataset, builder: Any, strategies: list[Any], tasks: list[Any],
                 train_config: Any, device: Any, environment: dict[str, Any], keys: _Keys, store: ResultsStore,
                 progress: Progress) -> None:
        self.plan, self.dataset, self.builder, self.strategies, self.tasks = plan, dataset, builder, strategies, tasks
        self.train_config, self.device, self.environment, self.keys = train_config, device, environment, keys
        self.store, self.progress = store, progress
        self.folds = {seed: patient_folds(dataset.patient, plan.folds, seed) for seed in plan.seeds}

    def _done(self, key: RecordKey, artifact: bool) -> bool:
        if self.plan.force:
            return False
        if self.store.get(key) is None:
            return False
        return not artifact or self.store.artifact_path(key, ".npz").exists()

    def run_cells(self) -> None:
        todo = [
            (strategy, seed, fold)
            for seed in self.plan.seeds
            for strategy in self.strategies
            for fold in range(self.plan.folds)
            if not self._done(self.keys.cell(strategy.name, seed, fold), artifact=True)
        ]
        total = len(self.strategies) * len(self.plan.seeds) * self.plan.folds
        if len(todo) < total:
            self.progress.note(f"reusing {total - len(todo)} of {total} trained folds from {self.store.run_dir}")
        if not todo:
            return
        import torch

        from lusbench import training

        images, confidence = training.dataset_tensors(self.dataset, self.device)
        check_model(self.builder, images[:2], self.dataset.n_classes)
        for strategy in dict.fromkeys(s for s, _, _ in todo):
            check_strategy(strategy, confidence[:8])
        true_masks = None if self.dataset.true_masks is None else torch.from_numpy(self.dataset.true_masks).to(self.device)
        with self.progress.task("training", total=len(todo) * self.train_config.epochs) as bar:
            for i, (strategy, seed, fold) in enumerate(todo, 1):
                label = f"[{i}/{len(todo)}] {strategy.name} seed {seed} fold {fold}"
                started = time.perf_counter()
                metrics = self._train_cell(strategy, seed, fold, images, confidence, true_masks, bar, label)
                dice = float(np.nanmean(metrics["dice"])) if "dice" in metrics else float("nan")
                self.progress.note(f"{label}: dice {dice:.3f}, {time.perf_counter() - started:.1f} s")

    def _train_cell(self, strategy: Any, seed: int, fold: int, images: Any, confidence: Any, true_masks: Any,
                    bar: Any, label: str) -> dict[str, np.ndarray]:
        import torch

        from lusbench import training
        from lusbench.segmetrics import calibration_bins, frame_metrics

        test_idx = self.folds[seed][fold]
        train_idx = np.sort(np.concatenate([f for i, f in enumerate(self.folds[seed]) if i != fold]))
        # Same seed for every strategy at (seed, fold): identical split, init and batch order, so
        # strategies differ only in their targets and the comparison is paired.
        cell_seed = seed * 1000 + fold
        fit_idx, val_idx = patient_holdout(train_idx, self.dataset.patient, self.plan.val_fraction, cell_seed)
        epochs_before = bar.completed

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            bar.update(completed=epochs_before + epoch + 1, description=f"{label} epoch {epoch + 1}")

        trained = training.train_model(self.builder, strategy, images, confidence, fit_idx, val_idx, self.train_config,
                                       seed=cell_seed, device=self.device, on_epoch=on_epoch)
        bar.update(completed=epochs_before + self.train_config.epochs)
        probs = training.predict_probs(trained.model, images, test_idx, self.train_config.batch_size)
        conf = confidence[torch.as_tensor(test_idx, device=confidence.device)]
        truth = None if true_masks is None else true_masks[torch.as_tensor(test_idx, device=true_masks.device)]
        metrics = frame_metrics(probs, conf, truth, self.plan.eval_threshold, self.dataset.classes)
        calibration = calibration_bins(probs, conf >= self.plan.eval_threshold)
        key = self.keys.cell(strategy.name, seed, fold)
        # Probabilities are kept at 8 bits: features are always computed from the stored copy, so a
        # resumed run and an uninterrupted one see the same numbers.
        quantized = (probs * 255).round().to(torch.uint8).cpu().numpy()
        self.store.save_arrays(key, frames=test_idx, probs=quantized, fit_frames=fit_idx, val_frames=val_idx)
        save_checkpoint(trained.model, self.store.artifact_path(key, ".pt"))
        payload = {
            "frames": test_idx.tolist(),
            "metrics": {name: values.tolist() for name, values in metrics.items()},
            "calibration": calibration,
            "best_epoch": trained.best_epoch,
            "history": trained.history,
        }
        self.store.put(key, payload, self.environment)
        return metrics

    def _oof_probs(self, row: str, seed: int) -> np.ndarray:
        out = np.zeros((self.dataset.n_frames, self.dataset.n_classes, *self.dataset.image_shape), dtype=np.float32)
        for fold in range(self.plan.folds):
            arrays = self.store.load_arrays(self.keys.cell(row, seed, fold))
            out[arrays["frames"]] = arrays["probs"].astype(np.float32) / 255.0
        return out

    def _reference_maps(self) -> dict[str, np.ndarray]:
        labels = (self.dataset.confidence_float() >= self.plan.eval_threshold).astype(np.float32)
        maps = {REFERENCE_EXPERT: labels}
        if self.dataset.true_masks is not None:
            maps[REFERENCE_TRUE] = self.dataset.true_masks.astype(np.float32)
        return maps

    def run_tasks(self) -> None:
        from lusbench.features import compute_features

        self._reference_segmentation()
        references: dict[str, np.ndarray] | None = None
        for seed in self.plan.seeds:
            for row in [s.name for s in self.strategies] + [REFERENCE_EXPERT, REFERENCE_TRUE]:
                missing = [t for t in self.tasks if not self._done(self.keys.task(row, seed, t.name), artifact=False)]
                if not missing:
                    continue
                if row in (REFERENCE_EXPERT, REFERENCE_TRUE):
                    references = references or self._reference_maps()
                    if row not in references:
                        continue
                    maps = references[row]
                else:
                    maps = self._oof_probs(row, seed)
                features = compute_features(maps, self.dataset)
                for task in missing:
                    started = time.perf_counter()
                    values = task.evaluate(features, self.dataset, seed)
                    self.store.put(self.keys.task(row, seed, task.name), {"metrics": values}, self.environment)
                    self.progress.note(f"task {task.name} on {row} seed {seed}: {time.perf_counter() - started:.1f} s")

    def _reference_segmentation(self) -> None:
        """The expert labels scored against the true masks (``true.*``): how good the labels themselves are."""
        if self.dataset.true_masks is None:
            return
        key = self.keys.cell(REFERENCE_EXPERT, -1, -1)
        if self._done(key, artifact=False):
            return
        import torch

        from lusbench.segmetrics import frame_metrics

        labels = torch.from_numpy(self._reference_maps()[REFERENCE_EXPERT])
        confidence = torch.from_numpy(self.dataset.confidence_float())
        truth = torch.from_numpy(self.dataset.true_masks)
        metrics = frame_metrics(labels, confidence, truth, self.plan.eval_threshold, self.dataset.classes)
        kept = {name: values.tolist() for name, values in metrics.items() if name.startswith("true.")}
        self.store.put(key, {"frames": list(range(self.dataset.n_frames)), "metrics": kept}, self.environment)


def collect_results(store: ResultsStore, manifest: dict[str, Any]) -> RunResults:
    """Assemble :class:`RunResults` for the run described by ``manifest`` from the store's records."""
    config = manifest["config"]
    keys = _Keys.of(manifest)
    n_frames = len(manifest["frame_patient"])
    results = RunResults(
        config=config,
        environment=manifest["environment"],
        metric_defs=[MetricDef(**m) for m in manifest["metric_defs"]],
        frame_patient=np.asarray(manifest["frame_patient"]),
        rows=[],
        seeds=list(config["seeds"]),
        references=set(manifest["references"]),
        reference_strategy=manifest["reference_strategy"],
    )
    for row in manifest["rows"]:
        present = False
        for seed in config["seeds"]:
            folds = [(seed, f) for f in range(config["folds"])] if row not in results.references else [(-1, -1)]
            seg = _collect_segmentation(store, keys, row, folds, n_frames)
            if seg is not None:
                metrics, calibration = seg
                results.seg[(row, seed)] = metrics
                if calibration is not None:
                    results.calibration[(row, seed)] = calibration
                present = True
            task_metrics: dict[str, list[float]] = {}
            for task in config["tasks"]:
                record = store.get(keys.task(row, seed, task))
                if record is not None:
                    task_metrics.update(record["metrics"])
            if task_metrics:
                results.tasks[(row, seed)] = task_metrics
                present = True
        if present:
            results.rows.append(row)
    return results


def _collect_segmentation(store: ResultsStore, keys: _Keys, row: str, folds: list[tuple[int, int]],
                          n_frames: int) -> tuple[dict[str, np.ndarray], dict[str, list[float]] | None] | None:
    records = [store.get(keys.cell(row, seed, fold)) for seed, fold in folds]
    if any(r is None for r in records):
        return None
    metrics: dict[str, np.ndarray] = {}
    for record in records:
        frames = np.asarray(record["frames"], dtype=np.int64)
        for name, values in record["metrics"].items():
            metrics.setdefault(name, np.full(n_frames, np.nan))[frames] = np.asarray(values, dtype=np.float64)
    calibrations = [r["calibration"] for r in records if "calibration" in r]
    return metrics, (pool_calibration(calibrations) if calibrations else None)


def read_manifest(store: ResultsStore) -> dict[str, Any]:
    """The description of the last run in ``store`` (written when it started)."""
    manifest = store.get_meta(MANIFEST)
    if manifest is None:
        raise UserError(f"'{store.run_dir}' holds no run configuration")
    return manifest


def fold_record_key(manifest: dict[str, Any], strategy: str, seed: int, fold: int) -> RecordKey:
    """The store key of one trained fold of the run described by ``manifest``."""
    return _Keys.of(manifest).cell(strategy, seed, fold)


def load_results(run_dir: Path) -> RunResults:
    """The results of the last run in ``run_dir``, rebuilt from its store without retraining."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").exists():
        raise UserError(f"no lusbench run in '{run_dir}' (no results.sqlite; run `lusbench run --out {run_dir}` first)")
    with ResultsStore(run_dir, readonly=True) as store:
        return collect_results(store, read_manifest(store))
