"""The training engine: one model per (strategy, seed, fold), trained on device-resident tensors.

The whole dataset is moved to the device once (:func:`dataset_tensors`); each step indexes a batch
out of it, augments it and applies the label strategy there, so the harness adds almost nothing to a
bare PyTorch loop (``benchmarks/test_bench_training.py`` measures it). Model selection uses the
strategy's own loss on the validation patients' targets: the validation split is labelled with the
same expert confidence as the training split, so the criterion never sees what the strategy does not
(true masks, the evaluation threshold).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from lusbench.errors import TrainingDiverged, UserError
from lusbench.train.augment import augment_batch
from lusbench.train.config import NORMALIZATIONS, WARMUP_FRACTION, TrainConfig
from lusbench.train.strategy import strategy_targets

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset
    from lusbench.train.models import ModelBuilder
    from lusbench.train.strategy import LabelStrategy

# cuBLAS reads this when it creates its first handle (the process's first CUDA matmul); deterministic kernels need
# it, so it is set when the engine is imported, before any training can touch CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# A validation split smaller than this cannot judge an epoch: early stopping is then off and the last epoch is
# kept. A handful of frames, or frames of a single patient, give a loss that follows that one patient's noise.
MIN_VALIDATION_FRAMES = 8
MIN_VALIDATION_PATIENTS = 2

# Why training stopped (stored per fold): every epoch ran; early stopping fired; every epoch ran because the
# validation split was too small to judge, so early stopping was off and the last epoch was kept.
STOP_ALL_EPOCHS = "all epochs ran"
STOP_EARLY = "early stopping"
STOP_NO_VALIDATION = "all epochs ran: validation split too small to judge, last epoch kept"


@dataclass
class TrainedModel:
    """The selected model (weights of ``best_epoch``, eval mode), one history entry per epoch run, and why
    training stopped (``stop_reason``: one of the ``STOP_*`` strings)."""

    model: torch.nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    stop_reason: str = STOP_ALL_EPOCHS


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device cuda: no CUDA device is available to torch {torch.__version__}")
        return torch.device("cuda")
    raise UserError(f"--device '{name}': expected auto, cpu or cuda")


def amp_dtype(device: torch.device, amp: bool, bf16_native: Callable[[], bool] | None = None) -> torch.dtype | None:
    """The autocast dtype of training and prediction on ``device``; None means fp32 (the CPU, or ``amp`` off).

    bf16 where the GPU computes it natively (``bf16_native()``, default: ``torch.cuda.is_bf16_supported`` without
    emulation: compute capability 8.0 and up), otherwise fp16, which :func:`train_model` pairs with a gradient
    scaler (fp16's narrow range underflows small gradients; bf16 has fp32's range and needs none).
    """
    if not amp or device.type != "cuda":
        return None
    native = bf16_native() if bf16_native is not None else torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32``: the precision as recorded in a trained fold's key."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[dtype]


def dataset_tensors(dataset: LUSDataset, device: torch.device, normalize: str = "unit") -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, H, W)`` float32 and confidence ``(N, K, H, W)`` float32 in [0, 1], on ``device``.

    The compact uint8 arrays are copied to the device once and converted there. ``normalize`` (see
    :class:`TrainConfig`): ``unit`` scales pixels to [0, 1]; ``per-image`` standardizes each image on its own,
    which uses nothing from other frames, so no fold's statistics leak into another's.
    """
    images = torch.from_numpy(dataset.images).to(device).unsqueeze(1).float().div_(255.0)
    if normalize == "per-image":
        mean = images.mean((1, 2, 3), keepdim=True)
        images = (images - mean).div_(images.std((1, 2, 3), keepdim=True).clamp_min(1e-6))
    elif normalize != "unit":
        raise ValueError(f"unknown normalization {normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
    confidence = torch.from_numpy(dataset.confidence).to(device).float().div_(float(dataset.confidence_scale))
    return images, confidence


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training (same seed -> same weights), restoring the caller's settings."""
    import torch.utils.deterministic

    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory)
    # warn_only: a CUDA kernel without a deterministic variant (e.g. some upsampling backward passes)
    # warns instead of failing the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    # Deterministic mode also NaN-fills every new tensor (a debugging aid); that costs ~2% of a CPU step
    # and changes no result, since every kernel writes its output.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
        torch.utils.deterministic.fill_uninitialized_memory = previous[3]


def validation_usable(val_idx: np.ndarray, val_patients: int | None = None) -> bool:
    """Whether a validation split is large enough to judge epochs by (see :data:`MIN_VALIDATION_FRAMES`)."""
    return len(val_idx) >= MIN_VALIDATION_FRAMES and (val_patients is None or val_patients >= MIN_VALIDATION_PATIENTS)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """One optimisation step on ``loss``: backward and step, through fp16's gradient scaler when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def _forward(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """fp32 logits of ``model`` on batch ``x``, given in channels_last (as the model is) and autocast to ``dtype`` when
    set: the one forward pass of training, validation and prediction."""
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model(x).float()


def train_model(builder: ModelBuilder, strategy: LabelStrategy, images: torch.Tensor, confidence: torch.Tensor,
                train_idx: np.ndarray, val_idx: np.ndarray, config: TrainConfig, seed: int, device: torch.device,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                val_patients: int | None = None, raters: torch.Tensor | None = None) -> TrainedModel:
    """Train a fresh ``builder`` model on frames ``train_idx`` with ``strategy``'s targets and loss.

    AdamW with a one-cycle learning-rate schedule over ``config.epochs``. Each epoch the training
    frames are reshuffled and split into ``ceil(n / batch_size)`` near-equal batches (every frame
    used, no tiny last batch). After each epoch the strategy's loss on ``val_idx`` is computed.

    Model selection and early stopping (``config.patience`` set): from
    :attr:`TrainConfig.first_stoppable_epoch` on (never during the warm-up, never before ``min_epochs``), the
    weights of the epoch with the lowest validation loss are kept, and training stops once ``patience`` epochs
    pass without improvement. Without patience, or when the validation split is too small to judge
    (:func:`validation_usable`; ``val_patients`` is the number of patients in it, when known), every epoch
    runs and the last one is kept. ``on_epoch(epoch, stats)`` receives ``train_loss``, ``val_loss`` (NaN
    without validation frames), ``lr``, ``img_per_s`` (training phase) and ``seconds``. Everything random
    (initialisation, batch order, augmentation, a stochastic strategy's draws) derives from ``seed``.

    ``raters`` ``(N, R, K, H, W)`` bool on ``device``: the per-rater masks, required by a strategy that sets
    ``needs_raters`` (each batch's slice is augmented with its images) and not read for any other.
    """
    if len(train_idx) == 0:
        raise ValueError("train_model needs training frames, got none")
    use_raters = bool(getattr(strategy, "needs_raters", False))
    if use_raters and raters is None:
        raise ValueError(f"strategy '{strategy.name}' needs rater masks and train_model was given none")
    judge = config.patience is not None and validation_usable(val_idx, val_patients)
    dtype = amp_dtype(device, config.amp)
    with _deterministic(device):
        torch.manual_seed(seed)
        # channels_last on every device: cuDNN's tensor-core kernels and oneDNN's CPU kernels both prefer it (on 2 CPU
        # cores a U-Net trains 10-20% and predicts about 30% faster than in NCHW: docs/benchmarks.md).
        model = builder.build(images.shape[1], confidence.shape[1]).to(device).to(memory_format=torch.channels_last)
        n_batches = math.ceil(len(train_idx) / config.batch_size)
        # fused: one kernel updates every parameter, instead of a Python loop of small ops per parameter tensor
        # (on the CPU it halves the optimizer step: docs/benchmarks.md).
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
        # fp16 only (see amp_dtype): scale the loss so that small gradients do not underflow.
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * n_batches,
                                                        pct_start=WARMUP_FRACTION)
        shuffle = torch.Generator().manual_seed(seed)
        jitter = torch.Generator(device=device).manual_seed(seed + 1)
        # A stream of its own, so that a stochastic strategy's draws leave the augmentation of the batches (and so
        # the pairing of strategies at a seed) unchanged.
        labels = torch.Generator(device=device).manual_seed(seed + 2)
        train_t = torch.as_tensor(train_idx, dtype=torch.long, device=device)
        val_batches = torch.as_tensor(val_idx, dtype=torch.long, device=device).split(config.batch_size)

        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state, stale = math.inf, config.epochs - 1, None, 0
        stop_reason = STOP_ALL_EPOCHS if config.patience is None or judge else STOP_NO_VALIDATION
        for epoch in range(config.epochs):
            started = time.perf_counter()
            model.train()
            order = train_t[torch.randperm(len(train_t), generator=shuffle).to(device)]
            total = torch.zeros((), device=device)
            for idx in order.tensor_split(n_batches):
                x, conf = images[idx], confidence[idx]
                batch_raters = raters[idx] if use_raters else None
                if config.augment:
                    x, conf, batch_raters = augment_batch(x, conf, jitter, batch_raters)
                target, weight = strategy_targets(strategy, conf, batch_raters, labels)
                loss = strategy.loss(_forward(model, x, dtype), target, weight)
                optimizer_step(loss, optimizer, scaler)
                scheduler.step()
                total += loss.detach() * len(idx)
            train_loss = total.item() / len(train_t)  # .item() syncs once per epoch, not per step
            train_seconds = time.perf_counter() - started
            val_loss = (_validation_loss(model, strategy, images, confidence, raters if use_raters else None,
                                         val_batches, dtype, seed)
                        if len(val_idx) else math.nan)
            stats = {"train_loss": train_loss, "val_loss": val_loss, "lr": scheduler.get_last_lr()[0],
                     "img_per_s": len(train_t) / train_seconds, "seconds": time.perf_counter() - started}
            history.append({"epoch": epoch, **stats})
            if on_epoch is not None:
                on_epoch(epoch, stats)
            if not (math.isfinite(train_loss) and (math.isfinite(val_loss) or not len(val_idx))):
                # A diverged model would otherwise leave NaN metrics that NaN-aware means silently drop.
                raise TrainingDiverged(f"training diverged at epoch {epoch + 1}: training loss {train_loss:.4g}, "
                                       f"validation loss {val_loss:.4g} (try a lower learning rate)")
            if not judge or epoch < config.first_stoppable_epoch:
                continue
            if val_loss < best_loss:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                if best_state is None:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:  # reuse the buffers: a fresh allocation per improvement costs more than the copy
                    for key, value in model.state_dict().items():
                        best_state[key].copy_(value)
            else:
                stale += 1
                if stale >= config.patience:
                    stop_reason = STOP_EARLY
                    break
        if judge and best_state is not None and best_epoch != epoch:
            model.load_state_dict(best_state)
        elif not judge:
            best_epoch = epoch
    model.eval()
    return TrainedModel(model=model, history=history, best_epoch=best_epoch, stop_reason=stop_reason)


def _validation_loss(model: torch.nn.Module, strategy: LabelStrategy, images: torch.Tensor, confidence: torch.Tensor,
                     raters: torch.Tensor | None, batches: tuple[torch.Tensor, ...], dtype: torch.dtype | None,
                     seed: int) -> float:
    """Frame-weighted mean of the strategy's loss on the validation frames (eval mode, no augmentation)."""
    model.eval()
    total = torch.zeros((), device=images.device)
    # Reseeded every epoch: a stochastic strategy's validation targets are the same draw each epoch, so epochs are
    # compared on the same targets and the selection follows the model, not the dice of the draw.
    labels = torch.Generator(device=images.device).manual_seed(seed + 3)
    with torch.inference_mode():
        for idx in batches:
            logits = _forward(model, images[idx], dtype)
            target, weight = strategy_targets(strategy, confidence[idx], None if raters is None else raters[idx], labels)
            total += strategy.loss(logits, target, weight) * len(idx)
    return total.item() / sum(len(b) for b in batches)


def predict_probs(model: torch.nn.Module, images: torch.Tensor, idx: np.ndarray, batch_size: int,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sigmoid probabilities ``(len(idx), K, H, W)`` float32 for frames ``idx``, on the images' device; the forward
    pass autocasts to ``dtype`` (:func:`amp_dtype`) when given."""
    model.eval()
    out = []
    with torch.no_grad():
        for batch in torch.as_tensor(idx, dtype=torch.long, device=images.device).split(batch_size):
            out.append(torch.sigmoid(_forward(model, images[batch], dtype)).contiguous())
    probs = torch.cat(out)
    if not torch.isfinite(probs).all():
        raise TrainingDiverged("the trained model predicts non-finite probabilities (NaN weights?)")
    return probs
