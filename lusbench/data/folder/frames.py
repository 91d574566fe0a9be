"""The frame table (``frames.csv``): one row per frame, naming its image and its label maps.

Columns: ``frame`` (unique id), ``patient``, ``visit`` (default 1), ``zone`` (default 0), ``image``,
``image_frame`` (optional: the frame of a multi-frame file, from 0); label layers ``confidence``, ``true`` and
``rater1``, ``rater2``, ... each as one column per class (``confidence.b_lines``: a 2-D map; a blank cell is an
empty map) or as one column of stacked ``(K, H, W)`` arrays (``confidence``); ``info.<name>`` columns become
``frame_info``. Any other column is a problem, so that a misspelt layer is never silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lusbench.data.folder.csvfile import Table, parse_int
from lusbench.data.folder.problems import Problems

BASE_COLUMNS = ("frame", "patient", "visit", "zone", "image", "image_frame")
_RATER = re.compile(r"^rater([1-9][0-9]*)$")


@dataclass
class FrameRow:
    line: int
    frame: str
    patient: int
    visit: int
    zone: int
    image: str
    image_frame: int | None
    #: layer -> one path per class ('' = empty map), or a single path to a stacked (K, H, W) array.
    layers: dict[str, list[str]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)  # info column (without 'info.') -> cell


@dataclass
class FramePlan:
    rows: list[FrameRow]
    layers: dict[str, bool]  # layer -> stacked (one column) or not (one column per class)
    raters: int
    info: list[str]  # the info columns, without 'info.'


def layer_order(layer: str) -> tuple[int, int]:
    """confidence, true, rater1, rater2, ...: the order layers are listed and exported in."""
    match = _RATER.match(layer)
    return (2, int(match.group(1))) if match else ((0 if layer == "confidence" else 1), 0)


def parse_frames(table: Table, classes: tuple[str, ...], problems: Problems) -> FramePlan | None:
    """The rows of ``table`` checked against ``classes``; None if the columns themselves are unusable."""
    file = table.file
    before = len(problems.items)
    layers: dict[str, bool] = {}
    per_class: dict[str, set[str]] = {}
    info: list[str] = []
    for column in table.columns:
        if column in BASE_COLUMNS:
            continue
        head, dot, tail = column.partition(".")
        if head == "info" and dot and tail:
            info.append(column)
        elif head in ("confidence", "true") or _RATER.match(head):
            if not dot:
                layers[head] = True
            elif tail in classes:
                per_class.setdefault(head, set()).add(tail)
            else:
                problems.add(file, f"column '{column}': unknown class '{tail}' (the manifest's classes: "
                                   f"{', '.join(classes)})", 1)
        else:
            problems.add(file, f"unknown column '{column}' (see docs/data-format.md; extra per-frame data goes in "
                               f"'info.<name>' columns)", 1)
    for layer, named in per_class.items():
        if layer in layers:
            problems.add(file, f"layer '{layer}' has both a stacked column and per-class columns", 1)
        missing = [c for c in classes if c not in named]
        if missing:
            problems.add(file, f"layer '{layer}' lacks the column(s) {', '.join(f'{layer}.{c}' for c in missing)}", 1)
        layers[layer] = False
    for required in ("frame", "patient", "image"):
        if required not in table.columns:
            problems.add(file, f"no '{required}' column", 1)
    raters = sorted(int(_RATER.match(layer).group(1)) for layer in layers if _RATER.match(layer))
    if raters and raters != list(range(1, len(raters) + 1)):
        problems.add(file, f"rater layers must be numbered 1..R without gaps, got {', '.join(map(str, raters))}", 1)
    if "confidence" not in layers and not raters:
        problems.add(file, "no label layer: give confidence maps (confidence.<class>) or rater masks "
                           "(rater1.<class>, ...)", 1)
    if len(problems.items) > before:
        return None
    if not table.rows:
        problems.add(file, "the dataset is empty: the table has no frames")
        return None
    rows: list[FrameRow] = []
    seen: dict[str, int] = {}
    for cells, line in zip(table.rows, table.lines, strict=True):
        def bad(message: str, line: int = line) -> None:
            problems.add(file, message, line)

        frame = cells["frame"]
        if not frame:
            bad("the frame id is blank")
        elif frame in seen:
            bad(f"duplicate frame id '{frame}' (first on line {seen[frame]})")
        else:
            seen[frame] = line
        ids = {}
        for column, default, low in (("patient", None, 0), ("visit", 1, 1), ("zone", 0, 0)):
            text = cells.get(column, "")
            if text == "" and default is not None:
                ids[column] = default
                continue
            try:
                value = parse_int(text) if text else None
            except ValueError as exc:
                bad(f"{column}: {exc}")
                continue
            if value is None:
                bad(f"{column} is blank")
            elif value < low:
                bad(f"{column} must be >= {low}, got {value}")
            else:
                ids[column] = value
        index = None
        if cells.get("image_frame", ""):
            try:
                index = parse_int(cells["image_frame"])
                if index < 0:
                    raise ValueError(f"'{cells['image_frame']}' is negative")
            except ValueError as exc:
                bad(f"image_frame: {exc}")
                continue
        if not cells["image"]:
            bad("the image path is blank")
            continue
        if len(ids) != 3:
            continue
        row_layers = {layer: [cells[layer]] if stacked else [cells[f"{layer}.{c}"] for c in classes]
                      for layer, stacked in layers.items()}
        for layer, stacked in layers.items():
            if stacked and not cells[layer]:
                bad(f"the stacked '{layer}' path is blank")
        rows.append(FrameRow(line, frame, ids["patient"], ids["visit"], ids["zone"], cells["image"], index, row_layers,
                             {c[len("info."):]: cells[c] for c in info}))
    ordered = dict(sorted(layers.items(), key=lambda item: layer_order(item[0])))
    return FramePlan(rows, ordered, len(raters), [c[len("info."):] for c in info])
