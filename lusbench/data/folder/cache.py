"""The cache of decoded folder datasets, keyed by the content of their files.

Decoding thousands of PNGs takes seconds; reading the decoded arrays back takes a fraction of that. An entry is
keyed by the SHA-256 of every file the dataset is made of (manifest, tables, every image and map, each with its
path), the load options (``size``), the loader's format version and the decoders' versions (Pillow, pydicom): any
edit to any file, or a decoder that could decode differently, is another key.

Where: ``$LUSBENCH_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lusbench/folder-datasets`` (``~/.cache/...``), one
directory per entry: never inside the dataset folder, which may be read-only or shared. ``LUSBENCH_CACHE_DIR=off``
disables the cache. An entry is written to a temporary directory and renamed into place, so a reader never sees
half of one (no fsync: an entry cut short by a crash fails its checksums). On reading (memory-mapped,
copy-on-write), every array's size, dtype and CRC-32 is checked, and an entry that fails is removed and rebuilt,
never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lusbench.data.dataset import LUSDataset
from lusbench.data.folder.layout import dataset_arrays, dataset_from_layout

CACHE_ENV = "LUSBENCH_CACHE_DIR"
#: Bump when the loader would decode the same files differently: old entries are then never read.
LOADER_VERSION = 1
_META = "meta.json"


def cache_dir() -> Path | None:
    """The cache directory, or None when ``LUSBENCH_CACHE_DIR=off``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return None if explicit.lower() == "off" else Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lusbench" / "folder-datasets"


def content_key(root: Path, files: list[str], options: dict[str, Any]) -> str:
    """SHA-256 (hex) of the ``files`` (paths inside ``root``: path and bytes of each) and ``options``.

    The files are hashed in threads: hashlib releases the GIL on large buffers."""
    from PIL import __version__ as pillow

    unique = sorted(set(files))

    def digests_of(chunk: list[str]) -> list[str]:
        return [hashlib.sha256((root / relative).read_bytes()).hexdigest() for relative in chunk]

    # A chunk of files per thread: one future per file would cost more than hashing a small map.
    workers = min(8, os.cpu_count() or 1)
    chunks = [unique[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = dict(zip([f for c in chunks for f in c], [d for ds in pool.map(digests_of, chunks) for d in ds],
                          strict=True))
    digests = [hashed[f] for f in unique]
    versions = {"loader": LOADER_VERSION, "pillow": pillow}
    if any(f.lower().endswith(".dcm") for f in unique):
        import pydicom

        versions["pydicom"] = pydicom.__version__
    head = json.dumps({"versions": versions, "options": options}, sort_keys=True)
    total = hashlib.sha256(head.encode())
    for relative, value in zip(unique, digests, strict=True):
        total.update(f"{relative}\0{value}\n".encode())
    return total.hexdigest()


def read_entry(key: str) -> tuple[LUSDataset, list[str]] | None:
    """The dataset and notices stored under ``key``; None if absent, or if the entry is damaged (then removed)."""
    directory = cache_dir()
    entry = directory / key if directory else None
    if entry is None or not (entry / _META).is_file():
        return None
    try:
        meta = json.loads((entry / _META).read_text())
        arrays = {}
        for name, spec in meta["arrays"].items():
            # Copy-on-write memory maps: nothing is copied up front (the checksum reads the pages straight from the
            # OS cache), and the arrays are still writable without touching the entry.
            array = np.load(entry / spec["file"], mmap_mode="c", allow_pickle=False)
            if array.dtype.str != spec["dtype"] or list(array.shape) != spec["shape"] or _crc(array) != spec["crc32"]:
                raise ValueError(f"array {name} does not match its checksum")
            arrays[name] = array
        dataset = dataset_from_layout(arrays)
        return dataset, list(meta["notices"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, json.JSONDecodeError):
        shutil.rmtree(entry, ignore_errors=True)
        return None


def write_entry(key: str, dataset: LUSDataset, notices: list[str]) -> None:
    """Store ``dataset`` under ``key``; a cache that cannot be written is skipped (the load does not fail)."""
    directory = cache_dir()
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{key[:16]}.", suffix=".tmp"))
    except OSError:
        return
    try:
        meta: dict[str, Any] = {"notices": notices, "arrays": {}}
        for i, (name, array) in enumerate(dataset_arrays(dataset).items()):
            file = f"{i:03d}.npy"
            # No fsync: an entry cut short by a crash fails its checksums and is rebuilt.
            with (tmp / file).open("wb") as fh:
                np.save(fh, array, allow_pickle=False)
            meta["arrays"][name] = {"file": file, "dtype": array.dtype.str, "shape": list(array.shape), "crc32": _crc(array)}
        (tmp / _META).write_text(json.dumps(meta))
        try:
            os.rename(tmp, directory / key)
        except OSError:
            pass  # another process stored the same key first: its entry is as good as ours
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
