"""One cell of a grid, a (strategy, seed, fold) to train, as plain data, and :func:`run_cell`, which every executor
runs on it.

A cell configuration is a JSON-able dict: the plugins to load (the ``-p`` modules and ``LUSBENCH_PLUGINS``), the
dataset, model and strategy specs, the training settings, the frames to fit, validate and predict, the device and
the torch thread count. A worker rebuilds the dataset from its spec (once per worker process) and checks that its
content hash is the driver's, so a worker never trains on other data than the keys say. The result is a plain
record (the fold's payload) plus its artifacts (held-out frames, 8-bit probabilities, the weights as CPU tensors);
the driver alone writes them to the results store.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lusbench.data.dataset import TRAINING_FIELDS
from lusbench.errors import TrainingDiverged, UserError

if TYPE_CHECKING:
    from lusbench.api.plugins import Plugins
    from lusbench.data.dataset import LUSDataset

# What a worker's dataset must equal the driver's in: every field any strategy trains from.
CELL_FIELDS = (*TRAINING_FIELDS, "rater_masks")

# The epoch callback of an in-process cell: (epoch, stats).
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class CellContext:
    """What a worker builds once and reuses for every cell of the same run: the plugins, the dataset and its
    tensors on the training device. ``on_epoch`` is set only in the driver's own process (the local executor)."""

    plugins: Plugins
    dataset: LUSDataset
    data_hash: str
    images: Any
    confidence: Any
    raters: Any  # the rater masks on the device, None for a dataset without
    on_epoch: Callable[[dict[str, Any], int, dict[str, float]], None] | None = None


# Per worker process: one context per (plugins, dataset, device, normalization).
_CONTEXTS: dict[tuple[Any, ...], CellContext] = {}


def cell_base(plugins: Plugins, dataset_spec: str, dataset: LUSDataset, model_spec: str, model_name: str,
              train: dict[str, Any], device: str, threads: int) -> dict[str, Any]:
    """The part of a cell configuration every cell of a run shares."""
    return {**warm_up_config(plugins, dataset_spec, model_spec, train["normalize"], device), "train": train,
            "data_hash": dataset.content_hash(CELL_FIELDS), "model_name": model_name, "threads": threads}


def warm_up_config(plugins: Plugins, dataset_spec: str, model_spec: str, normalize: str, device: str) -> dict[str, Any]:
    """The part of a cell configuration a worker needs to build its context (:func:`warm_up`)."""
    from lusbench.api.plugins import ALLOW_ENV

    return {"plugins": {"modules": list(plugins.modules), "env": os.environ.get(ALLOW_ENV)}, "dataset": dataset_spec,
            "model": model_spec, "train": {"normalize": normalize}, "device": device}


def warm_up(config: dict[str, Any]) -> None:
    """Build this worker's context for ``config`` (a :func:`warm_up_config`) and the model once (its library
    imported), so that a worker spends its start-up while the driver is still preparing the run. Device ``auto``
    is resolved here, as the driver resolves it for the cells."""
    from lusbench.train import engine as training

    config = {**config, "device": training.resolve_device(config["device"]).type}
    context = worker_context(config)
    context.plugins.models.create(config["model"]).build(context.images.shape[1], context.confidence.shape[1])


def context_key(config: dict[str, Any]) -> tuple[Any, ...]:
    return (tuple(config["plugins"]["modules"]), config["plugins"]["env"], config["dataset"], config["device"],
            config["train"]["normalize"])


def cell_label(config: dict[str, Any]) -> str:
    return f"{config['strategy']} seed {config['seed']} fold {config['fold']}"


def _load_plugins(config: dict[str, Any]) -> Plugins:
    from lusbench.api.plugins import ALLOW_ENV, load_plugins

    wanted = config["plugins"]["env"]
    saved = os.environ.get(ALLOW_ENV)
    # The driver's plugin selection, not whatever this worker's environment says.
    if wanted is None:
        os.environ.pop(ALLOW_ENV, None)
    else:
        os.environ[ALLOW_ENV] = wanted
    try:
        return load_plugins(config["plugins"]["modules"])
    finally:
        if saved is None:
            os.environ.pop(ALLOW_ENV, None)
        else:
            os.environ[ALLOW_ENV] = saved


def worker_context(config: dict[str, Any]) -> CellContext:
    """The context of ``config`` in this process, built on first use: plugins loaded as the driver loaded them and
    the dataset rebuilt from its spec, checked against the driver's content hash (when ``config`` has it)."""
    key = context_key(config)
    context = _CONTEXTS.get(key)
    if context is None:
        import torch

        from lusbench.train import engine as training

        plugins = _load_plugins(config)
        dataset = plugins.datasets.create(config["dataset"])
        device = training.resolve_device(config["device"])
        images, confidence = training.dataset_tensors(dataset, device, config["train"]["normalize"])
        raters = None if dataset.rater_masks is None else torch.from_numpy(dataset.rater_masks).to(device)
        context = _CONTEXTS[key] = CellContext(plugins, dataset, dataset.content_hash(CELL_FIELDS), images, confidence,
                                               raters)
    if "data_hash" in config and context.data_hash != config["data_hash"]:
        raise UserError(f"--dataset {config['dataset']}: built on worker {socket.gethostname()} it differs from the "
                        f"driver's (content {context.data_hash} != {config['data_hash']}); a dataset must be the same "
                        "from its spec on every worker (same files, same version)")
    return context


@contextmanager
def driver_context(config: dict[str, Any], context: CellContext) -> Iterator[None]:
    """While open, cells like ``config`` run in this process use ``context`` (the driver's own plugins, dataset and
    tensors) instead of building their own: what the in-process executor runs on."""
    key = context_key(config)
    _CONTEXTS[key] = context
    try:
        yield
    finally:
        del _CONTEXTS[key]


def run_cell(config: dict[str, Any]) -> dict[str, Any]:
    """Train and predict one cell; returns its record: ``payload`` (plain, for the store), ``artifacts``
    (``frames``, 8-bit ``probs``, ``fit_frames``, ``val_frames`` as arrays; ``weights``, the model's tensors on the
    CPU), ``notices`` for the progress line and ``seconds``. Pure: the same configuration gives the same record,
    so an executor may run a cell again after losing a worker."""
    import torch

    from lusbench.train import engine as training
    from lusbench.train.config import TrainConfig

    started = time.perf_counter()
    context = worker_context(config)
    # The driver chose the thread count and keyed the fold by it; the worker applies it.
    torch.set_num_threads(config["threads"])
    strategy = context.plugins.strategies.create(config["strategy"])
    builder = context.plugins.models.create(config["model"])
    for what, made, expected in (("--strategy", strategy, config["strategy"]), ("--model", builder, config["model_name"])):
        if made.name != expected:
            raise UserError(f"{what} {expected}: the worker's plugins made '{made.name}' (other plugin versions?)")
    train_config = TrainConfig(**config["train"])
    fit_idx, val_idx, test_idx = (np.asarray(config[k], dtype=np.int64) for k in ("fit", "val", "test"))
    label = cell_label(config)
    on_epoch = None
    if context.on_epoch is not None:
        hook = context.on_epoch

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            hook(config, epoch, stats)

    device = training.resolve_device(config["device"])
    try:
        trained = training.train_model(builder, strategy, context.images, context.confidence, fit_idx, val_idx,
                                       train_config, seed=config["cell_seed"], device=device, on_epoch=on_epoch,
                                       val_patients=config["val_patients"], raters=context.raters)
        probs = training.predict_probs(trained.model, context.images, test_idx, train_config.batch_size,
                                       training.amp_dtype(device, train_config.amp))
    except TrainingDiverged as exc:
        # One line naming strategy, seed and fold; the folds finished before it are kept.
        raise TrainingDiverged(f"{label}: {exc}") from None
    notices = []
    if trained.stop_reason == training.STOP_NO_VALIDATION and train_config.patience is not None:
        notices.append(f"validation split of {len(val_idx)} frames is too small to judge epochs: early stopping "
                       "off, last epoch kept")
    # Probabilities are kept at 8 bits, and every evaluation reads that copy, so a fold evaluated as it arrives and
    # one re-evaluated from the store give the same numbers.
    quantized = (probs * 255).round().to(torch.uint8)
    held_out = context.confidence[torch.as_tensor(test_idx, device=context.confidence.device)]
    payload = {"frames": test_idx.tolist(), "best_epoch": trained.best_epoch, "stop_reason": trained.stop_reason,
               "epochs_run": len(trained.history), "history": trained.history,
               "degenerate": degenerate_classes(probs, held_out, context.dataset.classes)}
    if payload["degenerate"]:
        notices.append(f"WARNING: learned nothing for {', '.join(payload['degenerate'])} (empty or "
                       "everywhere-positive predictions on every held-out frame)")
    weights = {name: tensor.detach().cpu().clone() for name, tensor in trained.model.state_dict().items()}
    return {
        "cell": [config["strategy"], config["seed"], config["fold"]],
        "payload": payload,
        "artifacts": {"frames": test_idx, "probs": quantized.cpu().numpy(), "fit_frames": fit_idx, "val_frames": val_idx,
                      "weights": weights},
        "notices": notices,
        "seconds": time.perf_counter() - started,
    }


def degenerate_classes(probs: Any, confidence: Any, classes: tuple[str, ...]) -> list[str]:
    """The classes that have labels among the held-out frames but whose prediction (``probs >= 0.5``) is empty on
    every frame, or positive everywhere: a model that learned nothing for them, which averaged metrics would hide."""
    pred = probs >= 0.5
    labelled = (confidence > 0).flatten(2).any(-1).any(0)
    empty = ~pred.flatten(2).any(-1).any(0)
    full = pred.flatten(2).all(-1).all(0)
    return [c for c, lab, e, f in zip(classes, labelled.tolist(), empty.tolist(), full.tolist(), strict=True) if lab and (e or f)]
