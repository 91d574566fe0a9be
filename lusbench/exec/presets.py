"""Presets: named run sizes (docs/cli.md). Explicit CLI flags override any field of a preset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Everything ``lusbench run`` needs besides the strategies; each field maps to a CLI flag."""

    name: str
    description: str
    dataset: str
    model: str
    seeds: int
    folds: int
    train: dict[str, Any] = field(default_factory=dict)  # keyword arguments of lusbench.train.config.TrainConfig
    val_fraction: float = 0.2
    eval_threshold: float = 0.5


# Shared by every preset; each preset sets its own size-dependent fields on top.
_TRAIN_BASE: dict[str, Any] = {"weight_decay": 1e-4, "augment": True, "amp": True}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="quick",
            description="CI-sized: seconds per strategy on 2 CPU cores",
            dataset="synthetic-lus:patients=60,size=32",
            model="unet:resnet18,depth=3",
            seeds=1,
            folds=3,
            train={**_TRAIN_BASE, "epochs": 6, "batch_size": 16, "lr": 1e-2, "patience": 3},
        ),
        Preset(
            name="default",
            description="minutes on a laptop CPU",
            dataset="synthetic-lus:patients=40,size=64",
            model="unet",
            seeds=2,
            folds=3,
            train={**_TRAIN_BASE, "epochs": 6, "batch_size": 16, "lr": 1e-2, "patience": 3},
        ),
        Preset(
            name="paper",
            description="GPU-sized: full-resolution images, more seeds and epochs",
            dataset="synthetic-lus:size=128",
            model="unet:resnet18",
            seeds=5,
            folds=5,
            train={**_TRAIN_BASE, "epochs": 60, "batch_size": 32, "lr": 1e-3, "patience": 10},
        ),
    )
}

