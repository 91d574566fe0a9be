"""Writing any dataset in the folder format: what ``lusbench data export SPEC --out DIR`` does.

Images and maps become 8-bit PNGs (lossless; masks as 0/255 so that they can be looked at), an empty map a blank
cell, and the manifest records every column's dtype, so that loading the folder gives back identical arrays, and so
the same :meth:`~lusbench.data.dataset.LUSDataset.content_hash` (the results store's key). The folder is written
next to its destination under a temporary name and renamed into place: a failed export leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lusbench.data.dataset import LUSDataset
from lusbench.data.folder.manifest import MANIFEST_FILE, Manifest
from lusbench.errors import UserError


def frame_id(dataset: LUSDataset, i: int) -> str:
    """``p3_v1_z2_f000017``: readable, unique, and parsed back by ``data init``'s default pattern."""
    return f"p{dataset.patient[i]}_v{dataset.visit[i]}_z{dataset.zone[i]}_f{i:06d}"


def export_folder(dataset: LUSDataset, out: Path, *, force: bool = False) -> int:
    """Write ``dataset`` as a folder dataset at ``out``; returns the number of files written.

    ``out`` must not exist (or be an empty directory); with ``force`` an existing folder dataset (a directory
    holding a ``lusbench.json``) is replaced, anything else is refused."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist")
    replace = False
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            replace = True
        elif force and out.is_dir() and (out / MANIFEST_FILE).is_file():
            replace = True
        else:
            hint = "" if force else " (--force replaces an existing folder dataset)"
            raise UserError(f"--out {out}: exists and is not {'a folder dataset' if force else 'empty'}{hint}")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        count = _write(dataset, tmp)
        if replace:
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "dataset")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        return count
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(dataset: LUSDataset, root: Path) -> int:
    layers: list[tuple[str, str, np.ndarray, bool]] = []  # (column prefix, folder, (N, K, H, W) array, is a mask)
    layers.append(("confidence", "confidence", dataset.confidence, False))
    if dataset.true_masks is not None:
        layers.append(("true", "true", dataset.true_masks, True))
    if dataset.rater_masks is not None:
        for r in range(dataset.rater_masks.shape[1]):
            layers.append((f"rater{r + 1}", f"raters/{r + 1}", dataset.rater_masks[:, r], True))
    folders = ["images"] + [f"{folder}/{c}" for _, folder, _, _ in layers for c in dataset.classes]
    for folder in folders:
        (root / folder).mkdir(parents=True)
    header = ["frame", "patient", "visit", "zone", "image"]
    header += [f"{prefix}.{c}" for prefix, _, _, _ in layers for c in dataset.classes]
    header += [f"info.{name}" for name in dataset.frame_info]

    def write_frame(i: int) -> tuple[list[str], int]:
        name = frame_id(dataset, i)
        (root / "images" / f"{name}.png").write_bytes(_png(dataset.images[i]))
        cells = [name, str(dataset.patient[i]), str(dataset.visit[i]), str(dataset.zone[i]), f"images/{name}.png"]
        written = 1
        for _, folder, array, mask in layers:
            for c, cls in enumerate(dataset.classes):
                plane = array[i, c]
                if not plane.any():
                    cells.append("")  # a blank cell is an empty map: no file for it
                    continue
                relative = f"{folder}/{cls}/{name}.png"
                (root / relative).write_bytes(_png(plane.astype(np.uint8) * np.uint8(255) if mask else plane))
                cells.append(relative)
                written += 1
        cells += [_cell(values[i]) for values in dataset.frame_info.values()]
        return cells, written

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(write_frame, range(dataset.n_frames)))
    _write_csv(root / "frames.csv", header, [cells for cells, _ in results])
    dtypes = {column: getattr(dataset, column).dtype.name for column in ("patient", "visit", "zone")}
    dtypes.update({f"info.{name}": np.asarray(v).dtype.name for name, v in dataset.frame_info.items()
                   if np.asarray(v).dtype.kind in "iuf"})
    tables = {}
    for table in ("visits", "patients"):
        rows = getattr(dataset, table)
        if rows is None:
            continue
        columns = list(rows)
        _write_csv(root / f"{table}.csv", columns, [[_cell(rows[c][j]) for c in columns] for j in range(len(rows[columns[0]]))])
        dtypes.update({f"{table}.{c}": np.asarray(rows[c]).dtype.name for c in columns
                       if np.asarray(rows[c]).dtype.kind in "iuf"})
        tables[table] = f"{table}.csv"
    manifest = Manifest(name=dataset.name, classes=dataset.classes, confidence_scale=dataset.confidence_scale,
                        image_size=None, dtypes=dtypes, description=f"exported by lusbench data export from {dataset.name}",
                        **tables)
    (root / MANIFEST_FILE).write_text(manifest.dumps())
    return sum(written for _, written in results) + 2 + len(tables)


def _cell(value: object) -> str:
    """A CSV cell that reads back to the same value: NaN is blank (unknown), floats in full precision."""
    if isinstance(value, (float, np.floating)):
        # repr of the float64: exact for float32 values too, which are float64 values.
        return "" if np.isnan(value) else repr(float(value))
    if isinstance(value, (np.integer, np.bool_)):
        return str(int(value))
    return str(value)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
