"""Reading the CSV tables of a folder dataset: rows with their line numbers, cells parsed with one-line problems."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from lusbench.data.folder.problems import Problems
from lusbench.data.folder.readers import ReadError, safe_path


@dataclass
class Table:
    file: str
    columns: list[str]
    rows: list[dict[str, str]]
    lines: list[int]  # the line of each row in the file (the header is line 1)


def read_csv(root: Path, relative: str, problems: Problems) -> Table | None:
    """The table at ``relative`` (a path inside ``root``), or None with its problem added."""
    try:
        path = safe_path(root, relative)
    except ReadError as exc:
        problems.add(relative, str(exc))
        return None
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark, which would otherwise glue onto the first header.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                problems.add(relative, "the file is empty (a header line is needed)")
                return None
            columns = [c.strip() for c in header]
            rows, lines = [], []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # a blank line
                if len(cells) != len(columns):
                    problems.add(relative, f"{len(cells)} cells, the header has {len(columns)}", reader.line_num)
                    continue
                rows.append({c: v.strip() for c, v in zip(columns, cells, strict=True)})
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        problems.add(relative, "not UTF-8 text")
        return None
    except csv.Error as exc:
        problems.add(relative, f"not valid CSV: {exc}")
        return None
    seen: set[str] = set()
    for column in columns:
        if not column:
            problems.add(relative, "a header cell is empty", 1)
        elif column in seen:
            problems.add(relative, f"column '{column}' appears twice", 1)
        seen.add(column)
    return Table(relative, columns, rows, lines)


def parse_int(text: str) -> int:
    """An integer cell (``3``, ``3.0``); ValueError with the reason."""
    try:
        return int(text)
    except ValueError:
        try:
            value = parse_number(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or value != int(value):
            raise ValueError(f"'{text}' is not an integer") from None
        return int(value)


def parse_number(text: str) -> float:
    """A numeric cell: a blank is NaN (unknown); 'nan', 'inf' and anything non-numeric are errors."""
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"'{text}' is not a finite number (leave the cell blank for an unknown value)")
    return value
