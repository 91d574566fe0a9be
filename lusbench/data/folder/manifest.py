"""The manifest of a folder dataset, ``lusbench.json``: what the folder holds and how to read it (docs/data-format.md).

JSON rather than TOML: the standard library reads and writes it on every supported Python (``tomllib`` only
reads, and only from 3.11), so ``data export`` and ``data init`` write it without a dependency, and a syntax
error comes with its line and column.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lusbench.data.folder.problems import Problems

MANIFEST_FILE = "lusbench.json"
FORMAT = "lusbench-folder/1"
RESIZE_POLICIES = ("area", "bilinear")
CONSENSUS = ("fraction", "staple")
#: dtypes the ``dtypes`` section may ask for (what a dataset's integer and float columns are held as).
DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64")
DEFAULT_SF_CHANGE_MARGIN = 20.0
_CLASS = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class Manifest:
    name: str
    classes: tuple[str, ...]
    confidence_scale: int
    frames: str = "frames.csv"
    visits: str | None = None
    patients: str | None = None
    image_size: tuple[int, int] | None = None
    resize: str = "area"
    image_max: float | None = None
    consensus: str = "fraction"
    sf_change_margin: float = DEFAULT_SF_CHANGE_MARGIN
    dtypes: dict[str, str] = field(default_factory=dict)
    description: str = ""
    licence: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "name": self.name}
        for key in ("description", "licence"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        out.update({"classes": list(self.classes), "confidence_scale": self.confidence_scale, "frames": self.frames})
        for key in ("visits", "patients"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["image_size"] = list(self.image_size) if self.image_size else None
        out["resize"] = self.resize
        if self.image_max is not None:
            out["image_max"] = self.image_max
        out["consensus"] = self.consensus
        out["sf_change_margin"] = self.sf_change_margin
        if self.dtypes:
            out["dtypes"] = dict(self.dtypes)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def read_manifest(root: Path, problems: Problems) -> Manifest | None:
    """The manifest of the folder ``root``, or None with every problem of it added to ``problems``."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        problems.add(MANIFEST_FILE, "no manifest (lusbench data init PATH writes one)")
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        problems.add(MANIFEST_FILE, "not UTF-8 text")
        return None
    except json.JSONDecodeError as exc:
        problems.add(MANIFEST_FILE, f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno)
        return None
    if not isinstance(raw, dict):
        problems.add(MANIFEST_FILE, "must be a JSON object")
        return None
    return parse_manifest(raw, problems)


def parse_manifest(raw: dict[str, Any], problems: Problems) -> Manifest | None:
    before = len(problems.items)

    def bad(message: str) -> None:
        problems.add(MANIFEST_FILE, message)

    known = set(Manifest.__dataclass_fields__) | {"format"}
    for key in raw:
        if key not in known:
            bad(f"unknown key '{key}' (known: {', '.join(sorted(known))})")
    if raw.get("format") != FORMAT:
        bad(f"'format' must be \"{FORMAT}\", got {json.dumps(raw.get('format'))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        bad("'name' must be a non-empty string")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and _CLASS.match(c) for c in classes):
        bad("'classes' must be a non-empty list of class names (letters, digits, '_', '-')")
        classes = []
    elif len(set(classes)) != len(classes):
        bad("'classes' lists a class twice")
    scale = raw.get("confidence_scale")
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 255:
        bad(f"'confidence_scale' must be an integer in 1..255, got {json.dumps(scale)}")
    for key in ("frames", "visits", "patients", "description", "licence"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            bad(f"'{key}' must be a string")
    size = raw.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size)):
        bad(f"'image_size' must be null or [height, width], integers in 8..4096, got {json.dumps(size)}")
    resize = raw.get("resize", "area")
    if resize not in RESIZE_POLICIES:
        bad(f"'resize' must be one of {', '.join(RESIZE_POLICIES)}, got {json.dumps(resize)}")
    consensus = raw.get("consensus", "fraction")
    if consensus not in CONSENSUS:
        bad(f"'consensus' must be one of {', '.join(CONSENSUS)}, got {json.dumps(consensus)}")
    image_max = raw.get("image_max")
    if image_max is not None and (not isinstance(image_max, (int, float)) or isinstance(image_max, bool) or image_max <= 0):
        bad(f"'image_max' must be null or a positive number, got {json.dumps(image_max)}")
    margin = raw.get("sf_change_margin", DEFAULT_SF_CHANGE_MARGIN)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or margin < 0:
        bad(f"'sf_change_margin' must be a number >= 0, got {json.dumps(margin)}")
    dtypes = raw.get("dtypes", {})
    if not isinstance(dtypes, dict) or not all(isinstance(v, str) and v in DTYPES for v in dtypes.values()):
        bad(f"'dtypes' must map column names to one of {', '.join(DTYPES)}")
        dtypes = {}
    if len(problems.items) > before:
        return None
    return Manifest(name=name, classes=tuple(classes), confidence_scale=scale, frames=raw.get("frames", "frames.csv"),
                    visits=raw.get("visits"), patients=raw.get("patients"),
                    image_size=tuple(size) if size else None, resize=resize, image_max=image_max, consensus=consensus,
                    sf_change_margin=float(margin), dtypes=dict(dtypes), description=raw.get("description", ""),
                    licence=raw.get("licence", ""))
