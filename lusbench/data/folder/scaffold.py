"""``lusbench data init PATH``: a first manifest and tables for a folder of images and label maps.

Conventions it scans (every path inside ``PATH``):

- ``images/``: the frames, any supported file, in subfolders too; a frame's id is its path under ``images/``
  without the suffix (``p3/v1_z2``);
- ``confidence/<class>/<frame id>.<suffix>``: per-class confidence maps; or
- ``raters/<rater>/<class>/<frame id>.<suffix>``: per-rater binary masks (raters numbered in name order);
- ``true/<class>/<frame id>.<suffix>``: true masks, if known.

A frame without a map of some class gets a blank cell (an empty map). Patient, visit and zone come from the frame
id through a regular expression with named groups (default: ``p12``, ``v1``, ``z3`` anywhere in the id); a frame
it does not match gets a blank patient, which ``data validate`` reports until it is filled in. Nothing is written
here: :func:`scaffold` returns the files' texts, and the caller writes them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from lusbench.data.dataset import DEFAULT_CLASSES
from lusbench.data.folder.manifest import MANIFEST_FILE, Manifest
from lusbench.data.folder.readers import IMAGE_SUFFIXES
from lusbench.errors import UserError

DEFAULT_PATTERN = (r"(?i)(?:^|[^a-z])p(?:atient)?[_-]?(?P<patient>\d+)"
                   r"(?:.*?v(?:isit)?[_-]?(?P<visit>\d+))?(?:.*?z(?:one)?[_-]?(?P<zone>\d+))?")
TABLES = ("frames.csv", "visits.csv", "patients.csv")


@dataclass
class Scaffold:
    files: dict[Path, str] = field(default_factory=dict)  # path -> text to write
    report: list[str] = field(default_factory=list)  # what was found, for the user


def _files(folder: Path) -> dict[str, str]:
    """Frame id -> path (posix, relative to ``folder``) of every supported file under ``folder``."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            relative = path.relative_to(folder).as_posix()
            stem = relative[: -len(path.suffix)]
            if stem in found:
                raise UserError(f"{folder / relative}: frame id '{stem}' is also {folder / found[stem]}")
            found[stem] = relative
    return found


def _class_maps(root: Path, folder: str, classes: list[str] | None) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Classes found under ``root/folder`` and, per class, frame id -> path relative to ``root``."""
    base = root / folder
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise UserError(f"{base}: class folder(s) {', '.join(unknown)} are not in --classes {','.join(classes)}")
    maps = {name: {frame: f"{folder}/{name}/{path}" for frame, path in _files(base / name).items()} for name in names}
    return names, maps


def scaffold(path: Path, *, images: str = "images", confidence: str = "confidence", raters: str = "raters",
             true: str = "true", classes: list[str] | None = None, scale: int | None = None,
             pattern: str | None = None, name: str | None = None, force: bool = False) -> Scaffold:
    """The manifest and tables for the folder ``path``; UserError naming the first thing that prevents it."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    existing = [root / f for f in (MANIFEST_FILE, *TABLES) if (root / f).exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} exists (--force overwrites the manifest and tables)")
    if not (root / images).is_dir():
        raise UserError(f"{root / images}: no such directory (the frames go in PATH/{images}/, or give --images DIR)")
    frames = {frame: f"{images}/{p}" for frame, p in _files(root / images).items()}
    if not frames:
        raise UserError(f"{root / images}: no images ({', '.join(IMAGE_SUFFIXES)})")
    try:
        regex = re.compile(pattern or DEFAULT_PATTERN)
    except re.error as exc:
        raise UserError(f"--pattern: not a valid regular expression: {exc}") from None
    if "patient" not in regex.groupindex:
        raise UserError("--pattern: needs a named group (?P<patient>...)")
    has_conf, has_raters = (root / confidence).is_dir(), (root / raters).is_dir()
    if not has_conf and not has_raters:
        raise UserError(f"{root}: neither {confidence}/<class>/ confidence maps nor {raters}/<rater>/<class>/ masks found")
    layers: dict[str, dict[str, dict[str, str]]] = {}  # layer -> class -> frame -> path
    found_classes: set[str] = set()
    if has_conf:
        names, layers["confidence"] = _class_maps(root, confidence, classes)
        found_classes.update(names)
    rater_names = []
    if has_raters:
        rater_names = sorted(p.name for p in (root / raters).iterdir() if p.is_dir() and not p.name.startswith("."))
        for r, rater in enumerate(rater_names, start=1):
            names, layers[f"rater{r}"] = _class_maps(root, f"{raters}/{rater}", classes)
            found_classes.update(names)
    if (root / true).is_dir():
        names, layers["true"] = _class_maps(root, true, classes)
        found_classes.update(names)
    if classes is None:
        # The usual LUS classes in their usual order; any others after them, alphabetically.
        classes = [c for c in DEFAULT_CLASSES if c in found_classes] + sorted(found_classes - set(DEFAULT_CLASSES))
    if not classes:
        raise UserError(f"{root}: no class folders under {confidence}/ or {raters}/<rater>/")
    if has_conf and scale is None:
        raise UserError("--scale N is needed with confidence maps: the pixel value meaning 100% confidence "
                        "(e.g. 10 for levels 0..10, 255 for 8-bit maps where 255 = certain)")
    if scale is None:
        scale = len(rater_names)
    report = [f"frames      {len(frames)} in {images}/", f"classes     {', '.join(classes)}"]
    if rater_names:
        report.append("raters      " + ", ".join(f"rater{r} = {raters}/{n}" for r, n in enumerate(rater_names, start=1)))
    orphans = sorted({f for per_class in layers.values() for maps in per_class.values() for f in maps} - set(frames))
    if orphans:
        raise UserError(f"{root}: label map(s) without an image, e.g. '{orphans[0]}' ({len(orphans)} in all)")
    header = ["frame", "patient", "visit", "zone", "image"]
    layer_names = sorted(layers, key=lambda layer: (layer != "confidence", layer == "true", layer))
    header += [f"{layer}.{c}" for layer in layer_names for c in classes]
    rows, unmatched, keys = [], 0, set()
    for frame, image in frames.items():
        match = regex.search(frame)
        ids = {g: (match.group(g) or "") if match and g in regex.groupindex else "" for g in ("patient", "visit", "zone")}
        ids = {g: str(int(v)) if v else ("1" if g == "visit" else "0" if g == "zone" else "") for g, v in ids.items()}
        unmatched += not ids["patient"]
        if ids["patient"]:
            keys.add((int(ids["patient"]), int(ids["visit"])))
        cells = [frame, ids["patient"], ids["visit"], ids["zone"], image]
        cells += [layers[layer].get(c, {}).get(frame, "") for layer in layer_names for c in classes]
        rows.append(cells)
    blank = sum(1 for cells in rows for cell in cells[5:] if not cell)
    if blank:
        report.append(f"blank maps  {blank} (frame, class) cells have no map: read as empty (class absent)")
    if unmatched:
        report.append(f"patients    {unmatched} frame(s) did not match the pattern: fill in their patient in frames.csv")
    result = Scaffold(report=report)
    result.files[root / "frames.csv"] = _csv(header, rows)
    patients = sorted({p for p, _ in keys})
    result.files[root / "visits.csv"] = _csv(["patient", "visit", "sf_ratio", "spo2", "fio2"],
                                             [[str(p), str(v), "", "", ""] for p, v in sorted(keys)])
    result.files[root / "patients.csv"] = _csv(["patient", "readmission_30d", "sf_change"], [[str(p), "", ""] for p in patients])
    manifest = Manifest(name=name or root.resolve().name, classes=tuple(classes), confidence_scale=scale,
                        visits="visits.csv", patients="patients.csv",
                        description="written by lusbench data init: check every field (docs/data-format.md)")
    result.files[root / MANIFEST_FILE] = manifest.dumps()
    return result


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
