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
from lusbench.fileio import atomic_write_text

SCHEMA = "lusbench.leaderboard/1"
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
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not isinstance(doc.get("metrics"), list):
        raise UserError(f"{path} is not a lusbench leaderboard (no 'rows'/'metrics' lists)")
    return doc
