"""Loading a folder dataset (docs/data-format.md) into a :class:`~lusbench.data.dataset.LUSDataset`.

The loader reads the manifest and the tables, then decodes every row's image and maps (in threads: Pillow and
zlib release the GIL) straight into preallocated arrays, so memory stays near the size of the decoded dataset.
Every problem is collected with its file and line; if there is any, nothing is returned or cached and
:class:`~lusbench.data.folder.problems.FolderDatasetError` lists them all.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lusbench.data.dataset import LUSDataset
from lusbench.data.folder import cache
from lusbench.data.folder.clinical import read_clinical
from lusbench.data.folder.csvfile import parse_number, read_csv
from lusbench.data.folder.frames import FramePlan, FrameRow, parse_frames
from lusbench.data.folder.manifest import MANIFEST_FILE, Manifest, read_manifest
from lusbench.data.folder.problems import FolderDatasetError, Problem, Problems
from lusbench.data.folder.readers import ReadError, read_array, safe_path, to_grey_uint8, to_levels, to_mask
from lusbench.data.folder.resize import resize_image, resize_labels


@dataclass
class Loaded:
    dataset: LUSDataset
    notices: list[str]
    cached: bool  # read from the cache rather than decoded


def load_folder(path: str | os.PathLike[str], *, size: tuple[int, int] | None = None, use_cache: bool = True) -> Loaded:
    """The dataset in folder ``path``; ``size`` (height, width) overrides the manifest's ``image_size``.

    Raises :class:`FolderDatasetError` listing every problem."""
    shown = str(path)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FolderDatasetError(shown, [Problem(".", "no such directory" if not root.exists() else "not a directory")])
    root = root.resolve()
    problems = Problems()
    manifest = read_manifest(root, problems)
    table = read_csv(root, manifest.frames, problems) if manifest else None
    plan = parse_frames(table, manifest.classes, problems) if manifest and table else None
    if manifest is None or plan is None:
        problems.raise_if_any(shown)
    assert manifest is not None and plan is not None
    target = size or manifest.image_size
    key = None
    # Bad rows were reported and left out of the plan; the good ones are still decoded, so that one validate
    # lists every problem of the folder.
    if use_cache and not problems and cache.cache_dir() is not None:
        files = _files(root, manifest, plan)
        if files is not None:
            key = cache.content_key(root, files, {"size": list(size) if size else None})
            hit = cache.read_entry(key)
            if hit is not None:
                return Loaded(hit[0], hit[1], cached=True)
    dataset = _decode(root, manifest, plan, tuple(target) if target else None, problems)
    problems.raise_if_any(shown)
    assert dataset is not None
    if key is not None:
        cache.write_entry(key, dataset, problems.notices)
    return Loaded(dataset, problems.notices, cached=False)


def _files(root: Path, manifest: Manifest, plan: FramePlan) -> list[str] | None:
    """Every file the dataset is made of, or None if one is missing or outside (the decode will say which)."""
    files = [MANIFEST_FILE, manifest.frames] + [t for t in (manifest.visits, manifest.patients) if t]
    for row in plan.rows:
        files.append(row.image)
        files.extend(p for paths in row.layers.values() for p in paths if p)
    try:
        for relative in set(files):
            safe_path(root, relative)
    except ReadError:
        return None
    return files


class _Arrays:
    """The preallocated output: each row's decode writes its slices."""

    def __init__(self, n: int, k: int, size: tuple[int, int], plan: FramePlan) -> None:
        self.images = np.zeros((n, *size), np.uint8)
        self.confidence = np.zeros((n, k, *size), np.uint8) if "confidence" in plan.layers else None
        self.true = np.zeros((n, k, *size), bool) if "true" in plan.layers else None
        self.raters = np.zeros((n, plan.raters, k, *size), bool) if plan.raters else None

    def target(self, layer: str, i: int) -> np.ndarray:
        if layer == "confidence":
            return self.confidence[i]
        if layer == "true":
            return self.true[i]
        return self.raters[i, int(layer[len("rater"):]) - 1]


def _decode(root: Path, manifest: Manifest, plan: FramePlan, target: tuple[int, int] | None,
            problems: Problems) -> LUSDataset | None:
    rows = plan.rows
    size_given = target is not None
    file = manifest.frames
    k = len(manifest.classes)
    if target is None:
        # No size given: the first readable image sets it, and a frame of another size is a problem.
        for row in rows:
            try:
                target = _read_image(root, row, manifest).shape
                break
            except ReadError:
                continue
        if target is None:
            target = (1, 1)  # every image is unreadable: each row reports its own problem below
    out = _Arrays(len(rows), k, target, plan)
    resize_any = bool(size_given)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for found in pool.map(lambda i: _decode_row(root, rows[i], i, manifest, plan, target, out, resize_any),
                              range(len(rows))):
            problems.items.extend(found)
    ids = {}
    for column in ("patient", "visit", "zone"):
        ids[column] = np.array([getattr(r, column) for r in rows], dtype=manifest.dtypes.get(column, "int64"))
    info = {name: _info_column(file, [r.info[name] for r in rows], [r.line for r in rows], manifest.dtypes.get(f"info.{name}"),
                               problems) for name in plan.info}
    visits, patients = read_clinical(root, manifest, ids["patient"], ids["visit"], problems)
    if problems:
        return None
    confidence = out.confidence
    if confidence is None:
        confidence = _consensus(out.raters, manifest)
    return LUSDataset(name=manifest.name, images=out.images, confidence=confidence,
                      confidence_scale=manifest.confidence_scale, classes=manifest.classes, true_masks=out.true,
                      rater_masks=out.raters, visits=visits, patients=patients, frame_info=info, **ids)


def _read_image(root: Path, row: FrameRow, manifest: Manifest) -> np.ndarray:
    return to_grey_uint8(read_array(safe_path(root, row.image), row.image_frame), manifest.image_max)


def _decode_row(root: Path, row: FrameRow, i: int, manifest: Manifest, plan: FramePlan, size: tuple[int, int],
                out: _Arrays, resize: bool) -> list[Problem]:
    file = manifest.frames
    found: list[Problem] = []
    try:
        image = _read_image(root, row, manifest)
    except ReadError as exc:
        return [Problem(file, f"frame '{row.frame}': image '{row.image}': {exc}", row.line)]
    native = image.shape
    if native != size and not resize:
        return [Problem(file, f"frame '{row.frame}': image '{row.image}' is {native[0]}x{native[1]}, the first frame is "
                              f"{size[0]}x{size[1]} (set image_size in {MANIFEST_FILE} to resize every frame)", row.line)]
    out.images[i] = resize_image(image, size, manifest.resize)
    for layer, paths in row.layers.items():
        slot = out.target(layer, i)
        stacked = plan.layers[layer]
        names = [layer] if stacked else [f"{layer}.{c}" for c in manifest.classes]
        try:
            maps = _read_layer(root, paths, stacked, len(manifest.classes))
        except _LayerError as exc:
            found.append(Problem(file, f"frame '{row.frame}': {names[exc.index]} '{exc.path}': {exc}", row.line))
            continue
        for c, (raw, path) in enumerate(maps):
            if raw is None:
                continue  # a blank cell: an empty map (the slot is zero already)
            column = names[0] if stacked else names[c]
            if raw.shape != native:
                found.append(Problem(file, f"frame '{row.frame}': {column} '{path}' is {_shape(raw)}, its image is "
                                           f"{native[0]}x{native[1]}", row.line))
                continue
            try:
                labels = to_levels(raw, manifest.confidence_scale) if layer == "confidence" else to_mask(raw)
            except ReadError as exc:
                found.append(Problem(file, f"frame '{row.frame}': {column} '{path}': {exc}", row.line))
                continue
            slot[c] = resize_labels(labels, size)
    return found


class _LayerError(ReadError):
    def __init__(self, message: str, index: int, path: str) -> None:
        super().__init__(message)
        self.index, self.path = index, path


def _read_layer(root: Path, paths: list[str], stacked: bool, k: int) -> list[tuple[np.ndarray | None, str]]:
    """``(map or None for a blank cell, path)`` per class."""
    if stacked:
        try:
            stack = read_array(safe_path(root, paths[0]), None)
        except ReadError as exc:
            raise _LayerError(str(exc), 0, paths[0]) from None
        if stack.ndim != 3 or stack.shape[0] != k:
            raise _LayerError(f"a stacked layer must be ({k}, H, W), one map per class, got {stack.shape}", 0, paths[0])
        return [(stack[c], paths[0]) for c in range(k)]
    maps = []
    for c, path in enumerate(paths):
        if not path:
            maps.append((None, path))
            continue
        try:
            maps.append((read_array(safe_path(root, path), None), path))
        except ReadError as exc:
            raise _LayerError(str(exc), c, path) from None
    return maps


def _shape(array: np.ndarray) -> str:
    return "x".join(map(str, array.shape))


def _info_column(file: str, cells: list[str], lines: list[int], dtype: str | None, problems: Problems) -> np.ndarray:
    """An ``info.<name>`` column: numbers (blank = NaN) if every cell is one, else the text."""
    try:
        values = np.array([parse_number(c) for c in cells], dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=str)
    if dtype is not None:
        cast = values.astype(dtype) if np.isfinite(values).all() or np.dtype(dtype).kind == "f" else None
        if cast is not None and np.array_equal(cast.astype(np.float64), values, equal_nan=True):
            return cast
        problems.add(file, f"info column cannot be held as {dtype} (see 'dtypes' in {MANIFEST_FILE})", 1)
        return values
    if np.isfinite(values).all() and np.array_equal(values, np.round(values)):
        return values.astype(np.int64)
    return values


def _consensus(raters: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Confidence levels from the rater masks: the fraction of raters (or STAPLE's posterior), on the scale."""
    scale = manifest.confidence_scale
    if manifest.consensus == "staple":
        from lusbench.data.staple import staple

        # Each class separately, over all frames at once: STAPLE estimates each rater's sensitivity and specificity
        # per structure from the whole dataset.
        probability = np.stack([staple(np.moveaxis(raters[:, :, c], 1, 0)) for c in range(raters.shape[2])], axis=1)
        return np.floor(probability * np.float32(scale) + np.float32(0.5)).astype(np.uint8)
    # The fraction of raters, rounded half up to the scale in integers: exact whatever R and the scale are.
    r = raters.shape[1]
    count = raters.sum(axis=1, dtype=np.uint16 if r * (2 * scale + 1) < 2**16 else np.int64)
    return ((count * (2 * scale) + r) // (2 * r)).astype(np.uint8)
