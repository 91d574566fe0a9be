"""The results store: one SQLite database per run directory, one record per finished unit of work.

A record is keyed by (dataset, model, row, seed, fold, task, training key, evaluation key)
(:mod:`lusbench.results.keys` says what the two keys hash):

- a **trained fold** has ``task == ""`` and ``eval_key == ""``; its artifacts (out-of-fold probabilities,
  checkpoint) live beside the database as files written atomically *before* the record is committed, so a
  record that exists always points at a complete artifact, and an interrupted run loses only the unit it was
  working on;
- a fold's **evaluation** (frame metrics, calibration) has the same fields plus its ``eval_key``; it has no
  artifacts of its own and reads its trained fold's (:meth:`RecordKey.artifact_id`);
- a **downstream-task** record has ``fold == -1`` and its task's name.

Every record also stores the parts its keys were hashed from, so a run that retrains a fold can say which
part changed since the fold was last trained (:meth:`ResultsStore.latest_trained`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError
from lusbench.fileio import atomic_write_npz

if TYPE_CHECKING:
    import numpy as np

# 2: separate training and evaluation keys, and the key parts stored with each record. A schema-1 store's keys
# cannot tell a stale fold from a valid one (they hold neither the data content nor the code that trained it),
# so its records are set aside, never reused.
SCHEMA_VERSION = 2
DB_NAME = "results.sqlite"
OLD_RECORDS_TABLE = "records_schema1"
LOCK_NAME = "run.lock"


@dataclass(frozen=True)
class RecordKey:
    dataset: str
    model: str
    row: str
    seed: int
    fold: int
    task: str
    train_key: str
    eval_key: str

    def artifact_id(self) -> str:
        """A short stable id naming the artifact files of the trained fold this key belongs to: the same for the
        trained fold and for each of its evaluations, which are computed from those artifacts."""
        trained = {**asdict(self), "task": "", "eval_key": ""}
        return hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PriorTraining:
    """The most recent trained fold of a (dataset, model, row, seed, fold), whatever its key."""

    train_key: str
    parts: dict[str, Any]


class ResultsStore:
    """Records of one run directory (``<run_dir>/results.sqlite`` plus ``<run_dir>/artifacts/``).

    ``set_aside`` counts the records of an older store (schema 1) that opening it moved out of the way; they are
    kept in table ``records_schema1`` for inspection and never reused.
    """

    def __init__(self, run_dir: Path, readonly: bool = False) -> None:
        """Open (creating it unless ``readonly``) the store of ``run_dir``; UserError if it is not a store this
        lusbench can read."""
        self.run_dir = Path(run_dir)
        self.artifact_dir = self.run_dir / "artifacts"
        self.set_aside = 0
        path = self.run_dir / DB_NAME
        try:
            if readonly:
                # Read-only: works on a read-only mount (a CI artifact) and never changes the run directory.
                self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                self._db.execute("SELECT COUNT(*) FROM records")
                version = self._schema_version()
                if version != SCHEMA_VERSION:
                    self._db.close()
                    raise UserError(self._version_message(version) + f"; rerun `lusbench run --out {self.run_dir}`")
                return
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.artifact_dir.mkdir(exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{path} is not a readable lusbench results store: {exc}") from None

    def _schema_version(self) -> int | None:
        """The stored schema version; None for a database without lusbench's meta table."""
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return None if row is None else int(row[0])

    def _version_message(self, version: int | None) -> str:
        newer = version is not None and version > SCHEMA_VERSION
        return (f"{self.run_dir / DB_NAME} was written by a{' newer' if newer else 'n older'} lusbench "
                f"(results schema {version}, this one reads {SCHEMA_VERSION})")

    def _create_schema(self) -> None:
        self._db.execute("PRAGMA synchronous=NORMAL")
        has_records = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
        version = self._schema_version() if has_records else SCHEMA_VERSION
        if version is not None and version > SCHEMA_VERSION:
            self._db.close()
            raise UserError(self._version_message(version) + "; upgrade lusbench or use another --out")
        with self._db:
            if version != SCHEMA_VERSION:
                # Keys of schema 1 (or of a store without a version) hold too little to trust their records.
                self.set_aside = int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
                self._db.execute(f"ALTER TABLE records RENAME TO {OLD_RECORDS_TABLE}")
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS records (
                    dataset TEXT NOT NULL, model TEXT NOT NULL, row TEXT NOT NULL, seed INTEGER NOT NULL,
                    fold INTEGER NOT NULL, task TEXT NOT NULL, train_key TEXT NOT NULL, eval_key TEXT NOT NULL,
                    parts TEXT NOT NULL, environment TEXT NOT NULL, payload TEXT NOT NULL,
                    created REAL NOT NULL DEFAULT (julianday('now')),
                    PRIMARY KEY (dataset, model, row, seed, fold, task, train_key, eval_key))"""
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

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
            " AND train_key=? AND eval_key=?",
            tuple(asdict(key).values()),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: RecordKey, payload: dict[str, Any], environment: dict[str, Any],
            parts: dict[str, Any] | None = None) -> None:
        """Commit a finished record (after its artifacts are written), replacing any older one; ``parts`` are
        what its key was hashed from."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO records (dataset, model, row, seed, fold, task, train_key, eval_key,"
                " parts, environment, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (*asdict(key).values(), json.dumps(parts or {}, sort_keys=True), json.dumps(environment, sort_keys=True),
                 json.dumps(payload)),
            )

    def latest_trained(self, dataset: str, model: str, row: str, seed: int, fold: int) -> PriorTraining | None:
        """The most recently committed trained fold of ``row`` at ``seed`` and ``fold``, under any training key."""
        found = self._db.execute(
            "SELECT train_key, parts FROM records WHERE dataset=? AND model=? AND row=? AND seed=? AND fold=?"
            " AND task='' AND eval_key='' ORDER BY created DESC, rowid DESC LIMIT 1",
            (dataset, model, row, seed, fold),
        ).fetchone()
        return None if found is None else PriorTraining(found[0], json.loads(found[1]))

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def keys(self) -> list[RecordKey]:
        """Every record's key."""
        rows = self._db.execute("SELECT dataset, model, row, seed, fold, task, train_key, eval_key FROM records").fetchall()
        return [RecordKey(*r) for r in rows]

    def delete(self, keys: Collection[RecordKey]) -> None:
        """Remove the records of ``keys`` (their artifacts are the caller's: see :func:`prune`)."""
        with self._db:
            self._db.executemany(
                "DELETE FROM records WHERE dataset=? AND model=? AND row=? AND seed=? AND fold=? AND task=?"
                " AND train_key=? AND eval_key=?", [tuple(asdict(k).values()) for k in keys])

    def set_aside_count(self) -> int:
        """Records of a schema-1 store kept in ``records_schema1`` (never reused)."""
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (OLD_RECORDS_TABLE,)).fetchone():
            return 0
        return int(self._db.execute(f"SELECT COUNT(*) FROM {OLD_RECORDS_TABLE}").fetchone()[0])

    def drop_set_aside(self) -> None:
        with self._db:
            self._db.execute(f"DROP TABLE IF EXISTS {OLD_RECORDS_TABLE}")
        self._db.execute("VACUUM")  # give the space back to the file system

    # -- artifacts -------------------------------------------------------------------------------

    def artifact_path(self, key: RecordKey, suffix: str) -> Path:
        return self.artifact_dir / f"{key.artifact_id()}{suffix}"

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


# -- housekeeping: what the store holds, and removing what no run reads --------------------------------


@dataclass
class StoreUsage:
    """What a store holds against the keys of its last run (``live``); sizes in bytes.

    - ``stale``: records under keys the last run does not use (an older dataset, code, setting): never read again
      unless a later run goes back to exactly those keys;
    - ``set_aside``: schema-1 records kept for inspection, never reused;
    - ``orphans``: artifact files no record points at (an interrupted write, a deleted record).
    """

    live: list[RecordKey] = field(default_factory=list)
    stale: list[RecordKey] = field(default_factory=list)
    set_aside: int = 0
    live_bytes: int = 0
    stale_bytes: int = 0
    orphans: list[Path] = field(default_factory=list)
    orphan_bytes: int = 0
    database_bytes: int = 0


def _artifact_files(store: ResultsStore) -> dict[str, list[Path]]:
    """Artifact id -> its files (``<id>.npz``, ``<id>.pt``; a leftover temporary file has no id: key "")."""
    out: dict[str, list[Path]] = {}
    for path in sorted(store.artifact_dir.glob("*")) if store.artifact_dir.is_dir() else []:
        if path.is_file():
            out.setdefault("" if path.name.startswith(".") else path.name.split(".")[0], []).append(path)
    return out


def usage(store: ResultsStore, live: Collection[RecordKey]) -> StoreUsage:
    """Classify every record and artifact of ``store`` against ``live``, the keys its last run reads."""
    live = set(live)
    files = _artifact_files(store)
    result = StoreUsage(set_aside=store.set_aside_count())
    for key in store.keys():
        (result.live if key in live else result.stale).append(key)
    live_ids = {k.artifact_id() for k in result.live}
    stale_ids = {k.artifact_id() for k in result.stale} - live_ids
    for artifact_id, paths in files.items():
        size = sum(p.stat().st_size for p in paths)
        if artifact_id in live_ids:
            result.live_bytes += size
        elif artifact_id in stale_ids:
            result.stale_bytes += size
        else:
            result.orphans += paths
            result.orphan_bytes += size
    db = store.run_dir / DB_NAME
    result.database_bytes = sum(p.stat().st_size for p in (db, db.with_name(DB_NAME + "-wal")) if p.exists())
    return result


def prune(store: ResultsStore, live: Collection[RecordKey]) -> StoreUsage:
    """Remove the stale records, their artifacts, the orphan artifacts and the set-aside schema-1 records; returns
    what was removed (:func:`usage` before pruning). Live records and their artifacts are never touched."""
    found = usage(store, live)
    live_ids = {k.artifact_id() for k in found.live}
    # Records first: a record never points at a deleted artifact, even if this is interrupted half way.
    store.delete(found.stale)
    for artifact_id, paths in _artifact_files(store).items():
        if artifact_id not in live_ids:
            for path in paths:
                path.unlink(missing_ok=True)
    if found.set_aside:
        store.drop_set_aside()
    return found


@contextmanager
def run_lock(run_dir: Path, on_wait: Callable[[str], None] | None = None, wait: bool = True) -> Iterator[None]:
    """Hold the run directory's lock (``<run_dir>/run.lock``) for the duration: one run (or prune) at a time per
    directory. A second run waits, saying so through ``on_wait``, and then reuses every fold the first trained;
    with ``wait=False`` a held lock is a UserError instead. The lock is the operating system's (``flock``): a
    killed run releases it, so a crash never leaves the directory locked."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            if not wait:
                raise UserError(f"{run_dir} is in use by another lusbench process (pid {holder}); try again when it "
                                "has finished") from None
            if on_wait is not None:
                on_wait(f"{run_dir} is in use by another lusbench run (pid {holder}): waiting for it to finish, then "
                        "reusing what it trained")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
