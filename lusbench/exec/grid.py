"""The grid of one run: strategies x seeds x folds trained and evaluated, then the downstream tasks. Each unit
of work is a record in the results store, and a unit whose record exists is never recomputed (unless ``force``).

A trained fold and its evaluation are separate records under separate keys (:mod:`lusbench.results.keys`):
evaluation is recomputed from the fold's stored 8-bit probabilities, so a change that only affects evaluation
(the threshold, the metrics code) re-evaluates stored folds and retrains none.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench.data.confidence import binarize
from lusbench.data.folds import patient_folds, patient_holdout
from lusbench.errors import TrainingDiverged
from lusbench.evaluate.run_results import REFERENCE_EXPERT, REFERENCE_TRUE
from lusbench.results.keys import RunKeys, describe_change
from lusbench.results.store import RecordKey, ResultsStore
from lusbench.train.checkpoints import save_checkpoint
from lusbench.train.models import check_model
from lusbench.train.strategy import check_strategy

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset
    from lusbench.exec.plan import RunPlan
    from lusbench.progress import Progress


class Grid:
    """The work of one run; each method skips what the store already holds."""

    def __init__(self, plan: RunPlan, dataset: LUSDataset, builder: Any, strategies: list[Any], tasks: list[Any],
                 train_config: Any, device: Any, environment: dict[str, Any], keys: RunKeys, parts: dict[str, Any],
                 store: ResultsStore, progress: Progress) -> None:
        self.plan, self.dataset, self.builder, self.strategies, self.tasks = plan, dataset, builder, strategies, tasks
        self.train_config, self.device, self.environment, self.keys = train_config, device, environment, keys
        self.parts, self.store, self.progress = parts, store, progress
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
            with self.progress.task("training", total=len(todo) * self.train_config.epochs) as bar:
                for i, (strategy, seed, fold) in enumerate(todo, 1):
                    label = f"[{i}/{len(todo)}] {strategy.name} seed {seed} fold {fold}"
                    started = time.perf_counter()
                    frames, probs, notices = self._train_cell(strategy, seed, fold, images, confidence, raters, bar, label)
                    metrics = self._evaluate_cell(strategy.name, seed, fold, frames, probs, confidence, true_masks, raters)
                    dice = float(np.nanmean(metrics["dice"])) if "dice" in metrics else float("nan")
                    # One line per fold, whatever it has to say.
                    self.progress.note("; ".join([f"{label}: dice {dice:.3f}, {time.perf_counter() - started:.1f} s",
                                                  *notices]))
        if unevaluated:
            self.progress.note(f"evaluating {len(unevaluated)} stored folds from their out-of-fold probabilities")
            for strategy, seed, fold in unevaluated:
                arrays = self.store.load_arrays(self.keys.trained(strategy.name, seed, fold))
                probs = torch.from_numpy(arrays["probs"]).to(self.device)
                self._evaluate_cell(strategy.name, seed, fold, arrays["frames"], probs, confidence, true_masks, raters)

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

    def _train_cell(self, strategy: Any, seed: int, fold: int, images: Any, confidence: Any, raters: Any, bar: Any,
                    label: str) -> tuple[np.ndarray, Any, list[str]]:
        """Train and store one fold; returns its held-out frames, their stored (8-bit) probabilities and notices
        for the fold's progress line."""
        import torch

        from lusbench.train import engine as training

        test_idx = self.folds[seed][fold]
        train_idx = np.sort(np.concatenate([f for i, f in enumerate(self.folds[seed]) if i != fold]))
        # Same seed for every strategy at (seed, fold): identical split, init and batch order, so
        # strategies differ only in their targets and the comparison is paired.
        cell_seed = seed * 1000 + fold
        fit_idx, val_idx = patient_holdout(train_idx, self.dataset.patient, self.plan.val_fraction, cell_seed)
        epochs_before = bar.completed

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            bar.update(completed=epochs_before + epoch + 1, description=f"{label} epoch {epoch + 1}")

        try:
            trained = training.train_model(self.builder, strategy, images, confidence, fit_idx, val_idx,
                                           self.train_config, seed=cell_seed, device=self.device, on_epoch=on_epoch,
                                           val_patients=len(np.unique(self.dataset.patient[val_idx])), raters=raters)
        except TrainingDiverged as exc:
            # One line naming strategy, seed and fold; the folds finished before it are kept.
            raise TrainingDiverged(f"{label}: {exc}") from None
        notices = []
        if trained.stop_reason == training.STOP_NO_VALIDATION and self.train_config.patience is not None:
            notices.append(f"validation split of {len(val_idx)} frames is too small to judge epochs: early stopping "
                           "off, last epoch kept")
        bar.update(completed=epochs_before + self.train_config.epochs)
        try:
            probs = training.predict_probs(trained.model, images, test_idx, self.train_config.batch_size)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{label}: {exc}") from None
        key = self.keys.trained(strategy.name, seed, fold)
        # Probabilities are kept at 8 bits, and every evaluation (metrics, features) reads the stored copy, so a
        # fold evaluated as it is trained and one re-evaluated from the store give the same numbers.
        quantized = (probs * 255).round().to(torch.uint8)
        self.store.save_arrays(key, frames=test_idx, probs=quantized.cpu().numpy(), fit_frames=fit_idx, val_frames=val_idx)
        save_checkpoint(trained.model, self.store.artifact_path(key, ".pt"))
        payload = {"frames": test_idx.tolist(), "best_epoch": trained.best_epoch, "stop_reason": trained.stop_reason,
                   "epochs_run": len(trained.history), "history": trained.history,
                   "degenerate": degenerate_classes(probs, confidence[torch.as_tensor(test_idx, device=confidence.device)],
                                                    self.dataset.classes)}
        if payload["degenerate"]:
            notices.append(f"WARNING: learned nothing for {', '.join(payload['degenerate'])} (empty or "
                           "everywhere-positive predictions on every held-out frame)")
        self.store.put(key, payload, self.environment, self.parts["train"][strategy.name])
        return test_idx, quantized, notices

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
        maps = {REFERENCE_EXPERT: labels}
        if self.dataset.true_masks is not None:
            maps[REFERENCE_TRUE] = self.dataset.true_masks.astype(np.float32)
        return maps

    def run_tasks(self) -> None:
        from lusbench.evaluate.features import compute_features

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
                    values, predictions = task.evaluate_with_predictions(features, self.dataset, seed)
                    payload = {"metrics": values, **({"predictions": predictions} if predictions is not None else {})}
                    self.store.put(self.keys.task(row, seed, task.name), payload, self.environment,
                                   self.parts["tasks"][task.name])
                    self.progress.note(f"task {task.name} on {row} seed {seed}: {time.perf_counter() - started:.1f} s")

    def _reference_segmentation(self) -> None:
        """The expert labels scored against the true masks (``true.*``): how good the labels themselves are."""
        if self.dataset.true_masks is None:
            return
        key = self.keys.cell(REFERENCE_EXPERT, -1, -1)
        if self._done(key, artifact=False):
            return
        import torch

        from lusbench.evaluate.segmetrics import frame_metrics

        labels = torch.from_numpy(self._reference_maps()[REFERENCE_EXPERT])
        confidence = torch.from_numpy(self.dataset.confidence_float())
        truth = torch.from_numpy(self.dataset.true_masks)
        metrics = frame_metrics(labels, confidence, truth, self.plan.eval_threshold, self.dataset.classes)
        kept = {name: values.tolist() for name, values in metrics.items() if name.startswith("true.")}
        self.store.put(key, {"frames": list(range(self.dataset.n_frames)), "metrics": kept}, self.environment,
                       self.parts["evaluation"])




def degenerate_classes(probs: Any, confidence: Any, classes: tuple[str, ...]) -> list[str]:
    """The classes that have labels among the held-out frames but whose prediction (``probs >= 0.5``) is empty on
    every frame, or positive everywhere: a model that learned nothing for them, which averaged metrics would hide."""
    pred = probs >= 0.5
    labelled = (confidence > 0).flatten(2).any(-1).any(0)
    empty = ~pred.flatten(2).any(-1).any(0)
    full = pred.flatten(2).all(-1).all(0)
    return [c for c, lab, e, f in zip(classes, labelled.tolist(), empty.tolist(), full.tolist(), strict=True) if lab and (e or f)]
