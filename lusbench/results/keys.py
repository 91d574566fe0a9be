"""Record keys: what identifies a stored unit of work, so that a rerun reuses exactly what is still valid.

A trained fold is keyed by everything that can change its weights; the run's environment (versions, device,
the code) is part of the key.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lusbench import __version__
from lusbench.api.plugins import Plugins
from lusbench.results.store import RecordKey

MANIFEST = "last_run"


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


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


@dataclass(frozen=True)
class RunKeys:
    """The record keys of one run (from its manifest)."""

    dataset: str
    model: str
    cell_hash: str
    env_key: str

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> RunKeys:
        config = manifest["config"]
        return cls(config["dataset"], config["model"], manifest["cell_hash"], manifest["env_key"])

    def cell(self, row: str, seed: int, fold: int) -> RecordKey:
        return RecordKey(self.dataset, self.model, row, seed, fold, "", self.cell_hash, self.env_key)

    def task(self, row: str, seed: int, task: str) -> RecordKey:
        return RecordKey(self.dataset, self.model, row, seed, -1, task, self.cell_hash, self.env_key)


