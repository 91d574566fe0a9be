"""Training settings: what every fold of a run is trained with. Cheap to import (no torch), so a bad setting
is refused before any heavy work."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lusbench.errors import UserError

# Share of the schedule spent warming the learning rate up (one-cycle).
WARMUP_FRACTION = 0.2
NORMALIZATIONS = ("unit", "per-image")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of every fold of a run; recorded in the run's configuration and its training key.

    - ``patience``: stop after this many epochs without a lower validation loss; None: no early stopping
      (every epoch runs and the last one is kept).
    - ``min_epochs``: early stopping never stops before this many epochs, nor during the learning-rate
      warm-up (:data:`WARMUP_FRACTION` of the schedule), and selects the best epoch only among those.
    - ``augment``: flips and gain/offset jitter on the device (:mod:`lusbench.train.augment`).
    - ``normalize``: ``unit`` (pixel values / 255) or ``per-image`` (each image to zero mean and unit SD).
    - ``amp``: mixed precision on CUDA (bf16 where the GPU has it natively, else fp16 with a gradient scaler;
      :func:`lusbench.train.engine.amp_dtype`); ignored on CPU.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int | None
    augment: bool
    amp: bool
    min_epochs: int = 1
    normalize: str = "unit"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "min_epochs") + (("patience",) if self.patience is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"training setting {name} must be a positive integer, got {value!r}")
        if self.min_epochs > self.epochs:
            raise UserError(f"training setting min_epochs ({self.min_epochs}) exceeds epochs ({self.epochs})")
        if not self.lr > 0:
            raise UserError(f"training setting lr must be positive, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise UserError(f"training setting weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.normalize not in NORMALIZATIONS:
            raise UserError(f"training setting normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")

    @property
    def first_stoppable_epoch(self) -> int:
        """The first epoch (0-based) after which early stopping may stop or select: past the warm-up and min_epochs."""
        return max(self.min_epochs, math.ceil(WARMUP_FRACTION * self.epochs)) - 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
