"""The ``folder`` dataset: your own data as files on disk, ``--dataset folder:PATH`` (docs/data-format.md).

Written as an outside plugin would be: it only calls lusbench's public folder loader. Arguments: the folder
(positional, or ``path=``), and ``size=N`` or ``size=HxW`` to resize every frame (overriding the manifest's
``image_size``). The loader's notices (e.g. a patient without a clinical row, whom the tasks then skip) are
printed on stderr, one line each.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import lusbench

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset


def parse_size(text: str) -> tuple[int, int]:
    """``64`` -> (64, 64); ``48x64`` -> (48, 64) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(8 <= v <= 4096 for v in values):
        raise ValueError(f"size='{text}': expected N or HxW, integers in 8..4096")
    return (values[0], values[-1])


def folder_dataset(path: str | None = None, size: str | None = None) -> LUSDataset:
    """Your own data from a folder: folder:PATH[,size=N|HxW] (format: docs/data-format.md)."""
    if not path:
        raise ValueError("usage: folder:PATH (a folder holding lusbench.json; lusbench data init PATH writes one)")
    from lusbench.data.folder import load_folder

    loaded = load_folder(path, size=parse_size(size) if size else None)
    for notice in loaded.notices:
        print(f"dataset folder {path}: {notice}", file=sys.stderr)
    return loaded.dataset


@lusbench.hookimpl
def register_datasets(register: lusbench.api.hookspecs.Register) -> None:
    register("folder", folder_dataset)
