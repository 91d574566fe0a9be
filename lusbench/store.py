"""The results store: one SQLite database per run directory, one record per finished unit of work.

A record is keyed by (dataset, model, row, seed, fold, task, config hash, environment key):
``task`` is ``""`` for a segmentation cell (one trained model, one fold) and ``fold`` is ``-1`` for a
downstream-task record. Large arrays (out-of-fold probabilities, checkpoints) live beside the
database as files written atomically *before* their record is committed, so a record that exists
always points at a complete artifact, and an interrupted run loses only the unit it was working on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 1
DB_NAME = "results.sqlite"


@dataclass(frozen=True)
class RecordKey:
    dataset: str
    model: str
    row: str
    seed: int
    fold: int
    task: str
    config_hash: str
    env_key: str

    def digest(self) -> str:
        """A short stable id, used to name the record's artifact files."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    if not path.parent.is_dir():
        # Never create directories on the way: a typo in a path should fail, not build a tree.
        raise UserError(f"cannot write {path}: directory {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (or the old file's).
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as one compressed ``.npz``, atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class ResultsStore:
    """Records of one run directory (``<run_dir>/results.sqlite`` plus ``<run_dir>/artifacts/``)."""

    def __init__(self, run_dir: Path, readonly: bool = False) -> None:
        """Open (creating it unless ``readonly``) the store of ``run_dir``; UserError if it is not a store."""
        self.run_dir = Path(run_dir)
        self.artifact_dir = self.run_dir / "artifacts"
        try:
            if readonly:
                # Read-only: works on a read-only mount (a CI artifact) and never changes the run directory.
                self._db = sqlite3.connect(f"{(self.run_dir / DB_NAME).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                self._db.execute("SELECT COUNT(*) FROM records")
                return
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.artifact_dir.mkdir(exist_ok=True)
            self._db = sqlite3.connect(self.run_dir / DB_NAME, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.run_dir / DB_NAME} is not a readable lusbench results store: {exc}") from None

    def _create_schema(self) -> None:
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS records (
                    dataset TEXT NOT NULL, model TEXT NOT NULL, row TEXT NOT NULL, seed INTEGER NOT NULL,
                    fold INTEGER NOT NULL, task TEXT NOT NULL, config_hash TEXT NOT NULL, env_key TEXT NOT NULL,
                    environment TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL DEFAULT (julianday('now')),
                    PRIMARY KEY (dataset, model, row, seed, fold, task, config_hash, env_key))"""
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records ---------------------------------------------------------------------------------

    def get(self, key: RecordKey) -> dict[str, Any] | None:
        """The payload of a finished record, or None."""
        row = self._db.execute(
            "SELECT payload FROM records WHERE dataset=? AND model=? AND row=? AND seed=? AND fold=? AND task=?"
            " AND config_hash=? AND env_key=?",
            tuple(asdict(key).values()),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: RecordKey, payload: dict[str, Any], environment: dict[str, Any]) -> None:
        """Commit a finished record (after its artifacts are written), replacing any older one."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO records (dataset, model, row, seed, fold, task, config_hash, env_key,"
                " environment, payload) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*asdict(key).values(), json.dumps(environment, sort_keys=True), json.dumps(payload)),
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    # -- artifacts -------------------------------------------------------------------------------

    def artifact_path(self, key: RecordKey, suffix: str) -> Path:
        return self.artifact_dir / f"{key.digest()}{suffix}"

    def save_arrays(self, key: RecordKey, **arrays: np.ndarray) -> Path:
        path = self.artifact_path(key, ".npz")
        atomic_write_npz(path, arrays)
        return path

    def load_arrays(self, key: RecordKey) -> dict[str, np.ndarray]:
        import numpy as np

        with np.load(self.artifact_path(key, ".npz")) as data:
            return {name: data[name] for name in data.files}

    # -- run metadata ----------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])
