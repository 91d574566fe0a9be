"""Presets: named run sizes (DESIGN §4). Explicit CLI flags override any field of a preset."""

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
    train: dict[str, Any] = field(default_factory=dict)  # keyword arguments of lusbench.training.TrainConfig
    val_fraction: float = 0.2
    eval_threshold: float = 0.5


# Shared by every preset; each preset sets its own size-dependent fields on top.
_TRAIN_BASE: dict[str, Any] = {"batch_size": 32, "weight_decay": 1e-4, "augment": True, "amp": True}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="quick",
            description="CI-sized: seconds per strategy on 2 CPU cores",
            dataset="synthetic-lus:patients=30,size=32",
            model="unet",
            seeds=1,
            folds=3,
            train={**_TRAIN_BASE, "epochs": 4, "lr": 3e-3, "patience": 4},
        ),
        Preset(
            name="default",
            description="minutes on a laptop CPU",
            dataset="synthetic-lus:size=64",
            model="unet",
            seeds=2,
            folds=3,
            train={**_TRAIN_BASE, "epochs": 8, "lr": 3e-3, "patience": 3},
        ),
        Preset(
            name="paper",
            description="GPU-sized: full-resolution images, more seeds and epochs",
            dataset="synthetic-lus:size=128",
            model="unet:resnet18",
            seeds=5,
            folds=5,
            train={**_TRAIN_BASE, "epochs": 60, "lr": 1e-3, "patience": 10},
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        from lusbench.errors import UserError

        raise UserError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})") from None
