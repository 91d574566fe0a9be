import json
import os
import sqlite3

import numpy as np
import pytest

from lusbench.fileio import atomic_write_bytes, atomic_write_text
from lusbench.results.store import RecordKey, ResultsStore


def _key(**changes) -> RecordKey:
    fields = dict(dataset="synthetic-lus", model="unet", row="soft", seed=0, fold=1, task="", config_hash="c1", env_key="e1")
    return RecordKey(**{**fields, **changes})


def test_records_round_trip_and_every_key_field_matters(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.put(_key(), {"metrics": {"dice": [0.5, float("nan")]}}, {"torch": "x"})
        got = store.get(_key())
        assert got["metrics"]["dice"][0] == 0.5 and np.isnan(got["metrics"]["dice"][1])
        for change in (dict(dataset="d2"), dict(model="fpn"), dict(row="weighted"), dict(seed=1), dict(fold=2),
                       dict(task="sf-ratio"), dict(config_hash="c2"), dict(env_key="e2")):
            assert store.get(_key(**change)) is None, change
    # Reopening sees the committed record; the database is in WAL mode.
    with ResultsStore(tmp_path) as store:
        assert store.count() == 1
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_replaces_and_meta_round_trips(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.put(_key(), {"v": 1}, {})
        store.put(_key(), {"v": 2}, {})
        assert store.get(_key()) == {"v": 2} and store.count() == 1
        store.set_meta("last_run", {"rows": ["a"]})
        assert store.get_meta("last_run") == {"rows": ["a"]}
        assert store.get_meta("missing") is None


def test_arrays_are_saved_atomically_and_load_back(tmp_path):
    with ResultsStore(tmp_path) as store:
        probs = np.random.default_rng(0).integers(0, 255, (3, 5, 8, 8), dtype=np.uint8)
        path = store.save_arrays(_key(), frames=np.arange(3), probs=probs)
        assert path.parent == tmp_path / "artifacts"
        loaded = store.load_arrays(_key())
        assert np.array_equal(loaded["probs"], probs) and loaded["probs"].dtype == np.uint8
        assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "leaderboard.json"
    atomic_write_text(target, json.dumps({"old": True}))
    # Fails inside the write, after the temporary file exists: the old file and no debris remain.
    with pytest.raises(TypeError):
        atomic_write_bytes(target, 12345)  # type: ignore[arg-type]
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["leaderboard.json"]


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    target = tmp_path / "leaderboard.json"
    atomic_write_text(target, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    target.chmod(0o640)
    atomic_write_text(target, "{}")
    assert target.stat().st_mode & 0o777 == 0o640
