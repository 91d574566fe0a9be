"""lusbench: a benchmark of uncertainty-aware label strategies for lung-ultrasound segmentation.

Importing ``lusbench`` is cheap (no torch); the public names below load their modules on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from lusbench.api.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "LabelStrategy": "lusbench.train.strategy",
    "LUSDataset": "lusbench.data.dataset",
    "DEFAULT_CLASSES": "lusbench.data.dataset",
    "ModelBuilder": "lusbench.train.models",
    "DownstreamTask": "lusbench.evaluate.tasks",
    "MetricDef": "lusbench.evaluate.metricdefs",
    "dataset_from_arrays": "lusbench.data.arrays",
    "Executor": "lusbench.exec.executors",
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lusbench' has no attribute {name!r}")
    return getattr(import_module(module), name)
