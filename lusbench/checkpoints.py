"""Checkpoints of trained folds: written atomically beside their record, read back with safe loading.

A checkpoint is the model's ``state_dict`` (tensors only), loaded with ``torch.load(weights_only=True)``,
so opening a run directory from elsewhere never executes pickled code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from lusbench.errors import UserError
from lusbench.store import atomic_write_bytes

if TYPE_CHECKING:
    import torch

    from lusbench.plugins import Plugins


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_fold_model(run_dir: Path, strategy: str, seed: int, fold: int, plugins: Plugins) -> torch.nn.Module:
    """The model trained for ``strategy`` at ``seed`` and ``fold`` in the last run of ``run_dir``, in eval mode."""
    import torch

    from lusbench.runner import fold_record_key, read_manifest
    from lusbench.store import ResultsStore

    with ResultsStore(run_dir, readonly=True) as store:
        manifest = read_manifest(store)
        key = fold_record_key(manifest, strategy, seed, fold)
        path = store.artifact_path(key, ".pt")
        if store.get(key) is None or not path.exists():
            raise UserError(f"no checkpoint of {strategy} seed {seed} fold {fold} in {run_dir}")
    model = plugins.models.create(manifest["config"]["model"]).build(1, len(manifest["classes"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
