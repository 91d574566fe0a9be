"""The results store: one SQLite database per run directory, one record per finished unit of work.

A record is keyed by (dataset, model, row, seed, fold, task, config hash, environment key):
``task`` is ``""`` for a segmentation cell (one trained model, one fold) and ``fold`` is ``-1`` for a
downstream-task record. Large arrays (out-of-fold probabilities, checkpoints) live beside the
database as files written atomically *before* their record is committed, so a record that exists
always points at a complete artifact, and an interrupted run loses only the unit it was working on.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError
from lusbench.fileio import atomic_write_npz

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
