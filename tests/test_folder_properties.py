"""Property-based: corrupting a valid folder dataset in any of the ways a real one goes wrong never crashes the
loader with a traceback and is never silently accepted: every corruption is a problem that names its file."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lusbench.api.plugins import load_plugins
from lusbench.data.folder import FolderDatasetError, load_folder
from lusbench.data.folder.export import export_folder
from lusbench.data.folder.manifest import MANIFEST_FILE

SPEC = "synthetic-lus:patients=2,zones=2,size=32,raters=2"


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("valid") / "ds"
    export_folder(load_plugins().datasets.create(SPEC), root)
    load_folder(root, use_cache=False)  # the starting point is valid
    return root


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="")))


def _write(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _paths(root: Path, prefix: str) -> list[str]:
    found = (p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    return sorted(p for p in found if p.startswith(prefix))


# Each corruption edits the copy and returns the file name a problem must mention.
def truncate_image(root: Path, data: st.DataObject) -> str:
    target = data.draw(st.sampled_from(_paths(root, "images/")))
    raw = (root / target).read_bytes()
    # Cut into the pixel data (IEND is 12 bytes, the last IDAT's CRC 4 more): the image is really incomplete.
    (root / target).write_bytes(raw[: data.draw(st.integers(0, len(raw) - 24))])
    return target


def change_shape(root: Path, data: st.DataObject) -> str:
    from PIL import Image

    target = data.draw(st.sampled_from(_paths(root, "confidence/") + _paths(root, "raters/")))
    h, w = data.draw(st.sampled_from([(32, 31), (31, 32), (8, 8), (64, 32)]))
    Image.fromarray(np.zeros((h, w), np.uint8)).save(root / target)
    return target


def off_scale(root: Path, data: st.DataObject) -> str:
    from PIL import Image

    target = data.draw(st.sampled_from(_paths(root, "confidence/")))
    level = np.asarray(Image.open(root / target)).copy()
    level[data.draw(st.integers(0, 31)), data.draw(st.integers(0, 31))] = data.draw(st.integers(11, 255))
    Image.fromarray(level).save(root / target)
    return target


def bad_clinical_cell(root: Path, data: st.DataObject) -> str:
    table = data.draw(st.sampled_from(["visits.csv", "patients.csv"]))
    rows = _rows(root / table)
    row = data.draw(st.integers(1, len(rows) - 1))
    column = data.draw(st.integers(1, len(rows[0]) - 1))  # not the patient id: that one is checked separately
    rows[row][column] = data.draw(st.sampled_from(["NaN", "nan", "inf", "-inf", "abc", "1,5", "n/a", "--"]))
    _write(root / table, rows)
    return table


def duplicate_id(root: Path, data: st.DataObject) -> str:
    rows = _rows(root / "frames.csv")
    a, b = data.draw(st.lists(st.integers(1, len(rows) - 1), min_size=2, max_size=2, unique=True))
    rows[b][0] = rows[a][0]
    _write(root / "frames.csv", rows)
    return "frames.csv"


def unknown_class(root: Path, data: st.DataObject) -> str:
    rows = _rows(root / "frames.csv")
    column = data.draw(st.sampled_from([i for i, c in enumerate(rows[0]) if "." in c and not c.startswith("info.")]))
    layer = rows[0][column].partition(".")[0]
    rows[0][column] = f"{layer}.{data.draw(st.sampled_from(['pleura', 'B_lines', 'x', 'effusions']))}"
    _write(root / "frames.csv", rows)
    return "frames.csv"


def escaping_path(root: Path, data: st.DataObject) -> str:
    rows = _rows(root / "frames.csv")
    row = data.draw(st.integers(1, len(rows) - 1))
    paths = [i for i, c in enumerate(rows[0]) if c == "image" or "." in c and not c.startswith("info.")]
    column = data.draw(st.sampled_from(paths))
    rows[row][column] = data.draw(st.sampled_from(["../x.png", "images/../../x.png", "/etc/passwd", "../../../../etc/hosts"]))
    _write(root / "frames.csv", rows)
    return "frames.csv"


def broken_manifest(root: Path, data: st.DataObject) -> str:
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    key, value = data.draw(st.sampled_from([("confidence_scale", 0), ("confidence_scale", "10"), ("classes", []),
                                            ("classes", ["a", "a"]), ("format", "v2"), ("image_size", [0, 5]),
                                            ("resize", "cubic"), ("nonsense", 1), ("name", "")]))
    manifest[key] = value
    text = json.dumps(manifest)
    if data.draw(st.booleans()):
        text = text[: data.draw(st.integers(0, len(text) - 1))]  # or not even JSON
    (root / MANIFEST_FILE).write_text(text)
    return MANIFEST_FILE


def empty(root: Path, data: st.DataObject) -> str:
    rows = _rows(root / "frames.csv")
    _write(root / "frames.csv", rows[:1] if data.draw(st.booleans()) else [])
    return "frames.csv"


# One corruption of the frames' files (two in one row could hide each other: a row whose image cannot be read
# is not checked further), any of the independent ones, or one that hides everything behind it (no row can be
# read without a manifest or a usable header).
FILE_LEVEL = [truncate_image, change_shape, off_scale, escaping_path]
INDEPENDENT = [bad_clinical_cell, duplicate_id]
STRUCTURAL = [broken_manifest, empty, unknown_class]
corruption_sets = st.one_of(
    st.tuples(st.sampled_from(FILE_LEVEL), st.lists(st.sampled_from(INDEPENDENT), max_size=2, unique=True)).map(
        lambda t: [t[0], *t[1]]),
    st.lists(st.sampled_from(INDEPENDENT), min_size=1, max_size=2, unique=True),
    st.sampled_from(STRUCTURAL).map(lambda c: [c]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), corruptions=corruption_sets)
def test_every_corruption_is_a_problem_naming_its_file(valid, data, corruptions):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(valid, root)
        named = [corrupt(root, data) for corrupt in corruptions]
        with pytest.raises(FolderDatasetError) as info:  # anything else (a traceback) fails the test
            load_folder(root, use_cache=False)
        problems = [str(p) for p in info.value.problems]
        assert str(info.value).count("\n") == 0
        for file in named:
            assert any(file in p for p in problems), (file, problems)
