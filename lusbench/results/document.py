"""The leaderboard document on disk: its schema name, JSON encoding, atomic writing and reading.

The document itself is built by :mod:`lusbench.results.leaderboard` and described field by field in
docs/leaderboard.md; everything downstream (renderings, the report, ``lusbench check``) reads only this dict.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lusbench.errors import UserError
from lusbench.fileio import atomic_write_text, read_json

# 3: the label rows are named labels:expert / labels:true and flagged "label_row" (they were reference:* rows
# flagged "reference", a word now kept for the --reference strategy); a /2 document is upgraded on reading.
SCHEMA = "lusbench.leaderboard/3"
_RENAMED_ROWS_2 = {"reference:expert-labels": "labels:expert", "reference:true-masks": "labels:true"}
DEFAULT_RUN_DIR = "lusbench-runs"
LEADERBOARD_FILE = "leaderboard.json"


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars/arrays unwrapped, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [json_safe(v) for v in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(json_safe(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_leaderboard(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``doc`` as JSON to ``path`` atomically."""
    atomic_write_text(path, dumps(doc))


def read_leaderboard(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a leaderboard JSON file; UserError (one line) when it is missing, unreadable or not a leaderboard."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not isinstance(doc.get("metrics"), list):
        raise UserError(f"{path} is not a lusbench leaderboard (no 'rows'/'metrics' lists)")
    return upgrade(doc)


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``lusbench.leaderboard/2`` document in this schema (the numbers are the same; only the label rows' names
    and flag changed), so a committed baseline keeps working; other documents are returned as they are."""
    if doc.get("schema") != "lusbench.leaderboard/2":
        return doc
    for row in doc["rows"]:
        if isinstance(row, dict):
            row["strategy"] = _RENAMED_ROWS_2.get(row.get("strategy"), row.get("strategy"))
            row["label_row"] = bool(row.pop("reference", False))
    if isinstance(doc.get("calibration"), dict):
        doc["calibration"] = {_RENAMED_ROWS_2.get(k, k): v for k, v in doc["calibration"].items()}
    doc["schema"] = SCHEMA
    return doc


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def schema_problems(doc: Any) -> list[str]:
    """What in ``doc`` does not follow the leaderboard layout (docs/leaderboard.md) that readers rely on.

    Checks the fields ``lusbench check`` and the renderings read, with a JSON path for each problem; unknown
    fields are allowed (the schema grows by adding fields). Empty when the document is usable.
    """
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    problems: list[str] = []
    if not isinstance(doc.get("schema"), str):
        problems.append("'schema' is missing or not a string")
    if not isinstance(doc.get("config"), dict):
        problems.append("'config' is missing or not an object")
    metrics = doc.get("metrics")
    names: set[str] = set()
    if not isinstance(metrics, list):
        problems.append("'metrics' is missing or not a list")
        metrics = []
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("higher_is_better"), bool):
            problems.append(f"metrics[{i}] needs a string 'name' and a boolean 'higher_is_better'")
        else:
            names.add(m["name"])
    rows = doc.get("rows")
    if not isinstance(rows, list):
        problems.append("'rows' is missing or not a list")
        rows = []
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("strategy"), str):
            problems.append(f"{where} needs a string 'strategy'")
            continue
        where = f"rows[{i}] ({row['strategy']})"
        if not isinstance(row.get("metrics"), dict):
            problems.append(f"{where}: 'metrics' is missing or not an object")
            continue
        for name, entry in row["metrics"].items():
            if entry is None:
                continue
            if not isinstance(entry, dict):
                problems.append(f"{where}.metrics.{name} is not an object")
            elif not all(_number_or_null(entry.get(k)) for k in ("mean", "ci_low", "ci_high")):
                problems.append(f"{where}.metrics.{name}: 'mean', 'ci_low' and 'ci_high' must be numbers or null")
    return problems


def require_valid(doc: Any, path: str | os.PathLike[str]) -> None:
    """Raise UserError (one line, the first problem and how many more) unless ``doc`` follows the layout."""
    problems = schema_problems(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{path} is not a valid lusbench leaderboard: {problems[0]}{more}")
