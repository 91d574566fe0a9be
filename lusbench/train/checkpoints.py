"""Checkpoints of trained folds: written atomically beside their record, read back with safe loading.

A checkpoint is the model's ``state_dict`` (tensors only), loaded with ``torch.load(weights_only=True)``,
so opening a run directory from elsewhere never executes pickled code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from lusbench.fileio import atomic_write_bytes

if TYPE_CHECKING:
    import torch


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a ``state_dict`` (on any device) as CPU tensors, atomically: what a worker returns for its cell."""
    import torch

    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in state.items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load the tensors saved at ``path`` into ``model`` (safe loading: tensors only) and return it in eval mode."""
    import torch

    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
