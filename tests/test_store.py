import json
import os
import sqlite3

import numpy as np
import pytest

from lusbench.errors import UserError
from lusbench.fileio import atomic_write_bytes, atomic_write_text
from lusbench.results.store import OLD_RECORDS_TABLE, RecordKey, ResultsStore


def _key(**changes) -> RecordKey:
    fields = dict(dataset="synthetic-lus", model="unet", row="soft", seed=0, fold=1, task="", train_key="t1",
                  eval_key="e1")
    return RecordKey(**{**fields, **changes})


def test_records_round_trip_and_every_key_field_matters(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.put(_key(), {"metrics": {"dice": [0.5, float("nan")]}}, {"torch": "x"})
        got = store.get(_key())
        assert got["metrics"]["dice"][0] == 0.5 and np.isnan(got["metrics"]["dice"][1])
        for change in (dict(dataset="d2"), dict(model="fpn"), dict(row="weighted"), dict(seed=1), dict(fold=2),
                       dict(task="sf-ratio"), dict(train_key="t2"), dict(eval_key="e2")):
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


def test_a_folds_evaluations_read_its_trained_folds_artifacts(tmp_path):
    trained = _key(eval_key="")
    with ResultsStore(tmp_path) as store:
        store.save_arrays(trained, frames=np.arange(3))
        for evaluation in (_key(), _key(eval_key="e2")):
            assert store.artifact_path(evaluation, ".npz") == store.artifact_path(trained, ".npz")
            assert np.array_equal(store.load_arrays(evaluation)["frames"], np.arange(3))
        # Another trained fold (another training key, seed or row) has its own artifacts.
        for other in (_key(train_key="t2"), _key(seed=1), _key(row="weighted")):
            assert store.artifact_path(other, ".npz") != store.artifact_path(trained, ".npz")


def test_latest_trained_is_the_most_recent_training_of_that_fold_under_any_key(tmp_path):
    with ResultsStore(tmp_path) as store:
        assert store.latest_trained("synthetic-lus", "unet", "soft", 0, 1) is None
        store.put(_key(eval_key="", train_key="old"), {}, {}, {"dataset content": "a"})
        store.put(_key(eval_key="", train_key="new"), {}, {}, {"dataset content": "b"})
        store.put(_key(eval_key="e1", train_key="newer-but-an-evaluation"), {}, {}, {"eval threshold": 0.5})
        store.put(_key(eval_key="", train_key="other-fold", fold=2), {}, {}, {})
        prior = store.latest_trained("synthetic-lus", "unet", "soft", 0, 1)
        assert prior.train_key == "new" and prior.parts == {"dataset content": "b"}
        # Replacing a record makes it the most recent again.
        store.put(_key(eval_key="", train_key="old"), {}, {}, {"dataset content": "a"})
        assert store.latest_trained("synthetic-lus", "unet", "soft", 0, 1).train_key == "old"


def _old_store(run_dir) -> None:
    """A results store as lusbench wrote it before the training and evaluation keys were split (schema 1)."""
    run_dir.mkdir()
    with sqlite3.connect(run_dir / "results.sqlite") as conn:
        conn.execute("""CREATE TABLE records (dataset TEXT NOT NULL, model TEXT NOT NULL, row TEXT NOT NULL,
            seed INTEGER NOT NULL, fold INTEGER NOT NULL, task TEXT NOT NULL, config_hash TEXT NOT NULL,
            env_key TEXT NOT NULL, environment TEXT NOT NULL, payload TEXT NOT NULL,
            created REAL NOT NULL DEFAULT (julianday('now')),
            PRIMARY KEY (dataset, model, row, seed, fold, task, config_hash, env_key))""")
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO meta VALUES ('last_run', ?)", (json.dumps({"config": {}, "cell_hash": "c"}),))
        for fold in (0, 1):
            conn.execute("INSERT INTO records (dataset, model, row, seed, fold, task, config_hash, env_key, environment,"
                         " payload) VALUES ('synthetic-lus', 'unet', 'soft', 0, ?, '', 'c', 'e', '{}', '{}')", (fold,))


def test_an_old_store_is_read_as_holding_nothing_reusable(tmp_path):
    _old_store(tmp_path / "run")
    # Reading it (leaderboard, report, check) is one line saying what to do, not a KeyError.
    with pytest.raises(UserError, match=r"older lusbench \(results schema 1, this one reads 2\); rerun `lusbench run"):
        ResultsStore(tmp_path / "run", readonly=True)
    with ResultsStore(tmp_path / "run") as store:
        assert store.set_aside == 2 and store.count() == 0
        assert store.latest_trained("synthetic-lus", "unet", "soft", 0, 0) is None
        store.put(_key(), {"v": 1}, {})
    with ResultsStore(tmp_path / "run") as store:
        assert store.set_aside == 0 and store.count() == 1
    with ResultsStore(tmp_path / "run", readonly=True) as store:
        assert store.get(_key()) == {"v": 1}
    conn = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    assert conn.execute(f"SELECT COUNT(*) FROM {OLD_RECORDS_TABLE}").fetchone()[0] == 2


def test_a_store_from_a_newer_lusbench_is_refused(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.put(_key(), {"v": 1}, {})
        store.set_meta("schema_version", 99)
    for readonly in (True, False):
        with pytest.raises(UserError, match="written by a newer lusbench"):
            ResultsStore(tmp_path, readonly=readonly)


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


def _rec(row: str, train: str, eval_key: str = "", fold: int = 0) -> RecordKey:
    return RecordKey("ds", "m", row, 0, fold, "", train, eval_key)


def test_usage_and_prune_keep_live_records_and_remove_stale_and_orphans(tmp_path):
    from lusbench.results.store import prune, usage

    with ResultsStore(tmp_path) as store:
        live_fold, live_eval = _rec("soft", "new"), _rec("soft", "new", "e1")
        stale_fold, stale_eval = _rec("soft", "old"), _rec("soft", "old", "e1")
        for key in (live_fold, live_eval, stale_fold, stale_eval):
            store.put(key, {"x": 1}, {})
        store.save_arrays(live_fold, probs=np.zeros((4, 4), np.uint8))
        store.save_arrays(stale_fold, probs=np.zeros((8, 8), np.uint8))
        orphan = store.artifact_dir / "0123456789abcdef0123.pt"
        orphan.write_bytes(b"x" * 100)
        live = {live_fold, live_eval}
        found = usage(store, live)
        assert set(found.live) == live and set(found.stale) == {stale_fold, stale_eval}
        assert found.orphans == [orphan] and found.orphan_bytes == 100
        assert found.stale_bytes == store.artifact_path(stale_fold, ".npz").stat().st_size > 0
        removed = prune(store, live)
        assert set(removed.stale) == {stale_fold, stale_eval}
        assert set(store.keys()) == live and store.get(live_eval) == {"x": 1}
        assert store.artifact_path(live_fold, ".npz").exists()
        assert not store.artifact_path(stale_fold, ".npz").exists() and not orphan.exists()
        assert usage(store, live).stale == [] and usage(store, live).orphans == []


def test_prune_refuses_a_directory_a_run_is_using(tmp_path):
    import subprocess
    import sys

    from tests.conftest import run_cli

    ResultsStore(tmp_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lusbench.results.store import run_lock\n"
         f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_cli("store", "prune", "--out", str(tmp_path))
        assert proc.returncode == 2 and f"is in use by another lusbench process (pid {holder.pid})" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    # The operating system released the killed holder's lock.
    assert "no run configuration" in run_cli("store", "prune", "--out", str(tmp_path)).stderr
