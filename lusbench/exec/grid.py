"""The grid of one run: strategies x seeds x folds trained and evaluated, then the downstream tasks. Each unit
of work is a record in the results store, and a unit whose record exists is never recomputed (unless ``force``).

A trained fold and its evaluation are separate records under separate keys (:mod:`lusbench.results.keys`):
evaluation is recomputed from the fold's stored 8-bit probabilities, so a change that only affects evaluation
(the threshold, the metrics code) re-evaluates stored folds and retrains none.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench.data.confidence import binarize
from lusbench.data.folds import patient_folds, patient_holdout
from lusbench.evaluate.run_results import LABELS_EXPERT, LABELS_TRUE
from lusbench.exec.cells import CellContext, cell_label, driver_context, run_cell
from lusbench.results.keys import RunKeys, describe_change
from lusbench.results.store import RecordKey, ResultsStore
from lusbench.train.checkpoints import save_weights
from lusbench.train.models import check_model
from lusbench.train.strategy import check_strategy

if TYPE_CHECKING:
    from lusbench.api.plugins import Plugins
    from lusbench.data.dataset import LUSDataset
    from lusbench.exec.executors import Executor
    from lusbench.exec.plan import RunPlan
    from lusbench.progress import Progress


class Grid:
    """The work of one run; each method skips what the store already holds."""

    def __init__(self, plan: RunPlan, dataset: LUSDataset, builder: Any, strategies: list[Any], tasks: list[Any],
                 train_config: Any, device: Any, environment: dict[str, Any], keys: RunKeys, parts: dict[str, Any],
                 store: ResultsStore, progress: Progress, executor: Executor, plugins: Plugins,
                 cell_base: dict[str, Any]) -> None:
        self.plan, self.dataset, self.builder, self.strategies, self.tasks = plan, dataset, builder, strategies, tasks
        self.train_config, self.device, self.environment, self.keys = train_config, device, environment, keys
        self.parts, self.store, self.progress = parts, store, progress
        # Where the cells run, the plugins the driver loaded, and the run-wide part of every cell's configuration
        # (lusbench.exec.cells.cell_base).
        self.executor, self.plugins, self.cell_base = executor, plugins, cell_base
        self.folds = {seed: patient_folds(dataset.patient, plan.folds, seed) for seed in plan.seeds}

    def _done(self, key: RecordKey, artifact: bool) -> bool:
        if self.plan.force:
            return False
        if self.store.get(key) is None:
            return False
        return not artifact or self.store.artifact_path(key, ".npz").exists()

    def run_cells(self) -> None:
        """Train the folds the store lacks, evaluating each as it is stored, then evaluate the stored folds that
        lack an evaluation under this run's evaluation key."""
        cells = [(strategy, seed, fold) for seed in self.plan.seeds for strategy in self.strategies
                 for fold in range(self.plan.folds)]
        todo = [c for c in cells if not self._done(self.keys.trained(c[0].name, c[1], c[2]), artifact=True)]
        if len(todo) < len(cells):
            self.progress.note(f"reusing {len(cells) - len(todo)} of {len(cells)} trained folds from {self.store.run_dir}")
        self._explain_retraining(todo)
        unevaluated = [c for c in cells if c not in todo and not self._done(self.keys.cell(c[0].name, c[1], c[2]),
                                                                           artifact=False)]
        if not todo and not unevaluated:
            return
        import torch

        from lusbench.train import engine as training

        images, confidence = training.dataset_tensors(self.dataset, self.device, self.train_config.normalize)
        true_masks = None if self.dataset.true_masks is None else torch.from_numpy(self.dataset.true_masks).to(self.device)
        raters = None if self.dataset.rater_masks is None else torch.from_numpy(self.dataset.rater_masks).to(self.device)
        if todo:
            check_model(self.builder, images[:2], self.dataset.n_classes)
            for strategy in dict.fromkeys(s for s, _, _ in todo):
                check_strategy(strategy, confidence[:8], None if raters is None else raters[:8])
            self._train_cells(todo, images, confidence, true_masks, raters)
        if unevaluated:
            self.progress.note(f"evaluating {len(unevaluated)} stored folds from their out-of-fold probabilities")
            for strategy, seed, fold in unevaluated:
                arrays = self.store.load_arrays(self.keys.trained(strategy.name, seed, fold))
                probs = torch.from_numpy(arrays["probs"]).to(self.device)
                self._evaluate_cell(strategy.name, seed, fold, arrays["frames"], probs, confidence, true_masks, raters)

    def _train_cells(self, todo: list[tuple[Any, int, int]], images: Any, confidence: Any, true_masks: Any,
                     raters: Any) -> None:
        """Hand the cells to the executor and commit each result as it arrives (any order): its artifacts, its
        trained-fold record, then its evaluation; an interrupted grid keeps every cell that arrived."""
        configs = [self._cell_config(strategy, seed, fold) for strategy, seed, fold in todo]
        epochs = self.train_config.epochs
        with self.progress.task("training", total=len(todo) * epochs, unit="epochs, all folds") as bar:
            done = 0

            def on_epoch(config: dict[str, Any], epoch: int, stats: dict[str, float]) -> None:
                bar.update(completed=done * epochs + epoch + 1,
                           description=f"[{done + 1}/{len(todo)}] {cell_label(config)} epoch {epoch + 1}")

            # An in-process executor trains on the driver's own dataset and tensors, with per-epoch progress.
            context = CellContext(self.plugins, self.dataset, self.cell_base["data_hash"], images, confidence, raters, on_epoch)
            with driver_context(configs[0], context) if self.executor.in_process else nullcontext():
                for result in self.executor.map(run_cell, configs):
                    done += 1
                    metrics = self._commit_cell(result, confidence, true_masks, raters)
                    bar.update(completed=done * epochs)
                    row, seed, fold = result["cell"]
                    dice = float(np.nanmean(metrics["dice"])) if "dice" in metrics else float("nan")
                    # One line per fold, whatever it has to say.
                    self.progress.note("; ".join([f"[{done}/{len(todo)}] {row} seed {seed} fold {fold}: dice {dice:.3f}, "
                                                  f"{result['seconds']:.1f} s", *result["notices"]]))

    def _commit_cell(self, result: dict[str, Any], confidence: Any, true_masks: Any, raters: Any) -> dict[str, Any]:
        """Store one cell's artifacts, then its trained-fold record (so a record always points at complete
        artifacts), then its evaluation; returns the fold's frame metrics."""
        import torch

        row, seed, fold = result["cell"]
        key = self.keys.trained(row, seed, fold)
        artifacts = result["artifacts"]
        self.store.save_arrays(key, frames=artifacts["frames"], probs=artifacts["probs"],
                               fit_frames=artifacts["fit_frames"], val_frames=artifacts["val_frames"])
        save_weights(artifacts["weights"], self.store.artifact_path(key, ".pt"))
        self.store.put(key, result["payload"], self.environment, self.parts["train"][row])
        probs = torch.from_numpy(artifacts["probs"]).to(self.device)
        return self._evaluate_cell(row, seed, fold, artifacts["frames"], probs, confidence, true_masks, raters)

    def _cell_config(self, strategy: Any, seed: int, fold: int) -> dict[str, Any]:
        """The plain configuration of one cell (:mod:`lusbench.exec.cells`): the run's part plus its frames."""
        test_idx = self.folds[seed][fold]
        train_idx = np.sort(np.concatenate([f for i, f in enumerate(self.folds[seed]) if i != fold]))
        # Same seed for every strategy at (seed, fold): identical split, init and batch order, so
        # strategies differ only in their targets and the comparison is paired.
        cell_seed = seed * 1000 + fold
        fit_idx, val_idx = patient_holdout(train_idx, self.dataset.patient, self.plan.val_fraction, cell_seed)
        return {**self.cell_base, "strategy": strategy.name, "seed": seed, "fold": fold, "cell_seed": cell_seed,
                "fit": fit_idx.tolist(), "val": val_idx.tolist(), "test": np.asarray(test_idx).tolist(),
                "val_patients": len(np.unique(self.dataset.patient[val_idx]))}

    def _explain_retraining(self, todo: list[tuple[Any, int, int]]) -> None:
        """For folds trained before under another key, one notice per strategy and reason: which key part changed."""
        if self.plan.force:
            return
        reasons: dict[tuple[str, str], int] = {}
        for strategy, seed, fold in todo:
            prior = self.store.latest_trained(self.keys.dataset, self.keys.model, strategy.name, seed, fold)
            if prior is None:
                continue
            if prior.train_key == self.keys.train[strategy.name]:
                why = "its stored predictions are missing"
            else:
                why = describe_change(prior.parts, self.parts["train"][strategy.name])
            reasons[(strategy.name, why)] = reasons.get((strategy.name, why), 0) + 1
        for (row, why), count in reasons.items():
            self.progress.note(f"retraining {count} fold{'s' if count > 1 else ''} of {row}: {why}")

    def _evaluate_cell(self, row: str, seed: int, fold: int, frames: np.ndarray, quantized: Any, confidence: Any,
                       true_masks: Any, raters: Any) -> dict[str, np.ndarray]:
        """Score one fold's stored 8-bit probabilities of ``frames`` and store the result under the evaluation key."""
        import torch

        from lusbench.evaluate.segmetrics import calibration_bins, frame_metrics

        probs = quantized.float().div_(255.0)
        index = torch.as_tensor(frames, device=confidence.device)
        conf = confidence[index]
        truth = None if true_masks is None else true_masks[index]
        metrics = frame_metrics(probs, conf, truth, self.plan.eval_threshold, self.dataset.classes,
                                None if raters is None else raters[index])
        payload = {
            "frames": np.asarray(frames).tolist(),
            "metrics": {name: values.tolist() for name, values in metrics.items()},
            "calibration": calibration_bins(probs, binarize(conf, self.plan.eval_threshold)),
        }
        self.store.put(self.keys.cell(row, seed, fold), payload, self.environment, self.parts["evaluation"])
        return metrics

    def _oof_probs(self, row: str, seed: int) -> np.ndarray:
        out = np.zeros((self.dataset.n_frames, self.dataset.n_classes, *self.dataset.image_shape), dtype=np.float32)
        for fold in range(self.plan.folds):
            arrays = self.store.load_arrays(self.keys.trained(row, seed, fold))
            out[arrays["frames"]] = arrays["probs"].astype(np.float32) / 255.0
        return out

    def _reference_maps(self) -> dict[str, np.ndarray]:
        labels = binarize(self.dataset.confidence_float(), self.plan.eval_threshold).astype(np.float32)
        maps = {LABELS_EXPERT: labels}
        if self.dataset.true_masks is not None:
            maps[LABELS_TRUE] = self.dataset.true_masks.astype(np.float32)
        return maps

    def run_tasks(self) -> None:
        from lusbench.evaluate.features import compute_features

        self._reference_segmentation()
        references: dict[str, np.ndarray] | None = None
        for seed in self.plan.seeds:
            for row in [s.name for s in self.strategies] + [LABELS_EXPERT, LABELS_TRUE]:
                missing = [t for t in self.tasks if not self._done(self.keys.task(row, seed, t.name), artifact=False)]
                if not missing:
                    continue
                if row in (LABELS_EXPERT, LABELS_TRUE):
                    references = references or self._reference_maps()
                    if row not in references:
                        continue
                    maps = references[row]
                else:
                    maps = self._oof_probs(row, seed)
                features = compute_features(maps, self.dataset)
                for task in missing:
                    started = time.perf_counter()
                    values, predictions = task.evaluate_with_predictions(features, self.dataset, seed)
                    payload = {"metrics": values, **({"predictions": predictions} if predictions is not None else {})}
                    self.store.put(self.keys.task(row, seed, task.name), payload, self.environment,
                                   self.parts["tasks"][task.name])
                    self.progress.note(f"task {task.name} on {row} seed {seed}: {time.perf_counter() - started:.1f} s")

    def _reference_segmentation(self) -> None:
        """The expert labels scored against the true masks (``true.*``): how good the labels themselves are."""
        if self.dataset.true_masks is None:
            return
        key = self.keys.cell(LABELS_EXPERT, -1, -1)
        if self._done(key, artifact=False):
            return
        import torch

        from lusbench.evaluate.segmetrics import truth_metrics

        labels = torch.from_numpy(binarize(self.dataset.confidence_float(), self.plan.eval_threshold))
        metrics = truth_metrics(labels, torch.from_numpy(self.dataset.true_masks), self.dataset.classes)
        self.store.put(key, {"frames": list(range(self.dataset.n_frames)),
                             "metrics": {name: values.tolist() for name, values in metrics.items()}},
                       self.environment, self.parts["evaluation"])

