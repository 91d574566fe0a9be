"""``lusbench store ls/prune`` on real runs, and two real runs on one --out at once (slow: they train)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

TINY = ["--preset", "quick", "--folds", "2", "--epochs", "1", "--no-tasks", "--reference", "none", "-s", "threshold:0.5"]


def _trained(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("[") and " fold " in ln]


def test_ls_shows_stale_folds_and_prune_removes_only_them(tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", *TINY, "--out", str(out)).returncode == 0
    changed = run_cli("run", *TINY, "--epochs", "2", "--out", str(out))  # new training key: the first folds go stale
    assert changed.returncode == 0 and len(_trained(changed.stderr)) == 2
    orphan = out / "artifacts" / "ffffffffffffffffffff.npz"
    orphan.write_bytes(b"0" * 2048)
    ls = run_cli("store", "ls", "--out", str(out))
    assert ls.returncode == 0, ls.stderr
    folds = next(ln for ln in ls.stdout.splitlines() if "trained folds" in ln)
    assert folds.split("│")[2].strip() == "2" and folds.split("│")[3].strip() == "2"  # live, stale
    assert "stale trained folds by row: threshold:0.5 2" in ls.stdout
    assert "orphan artifact files (no record points at them): 1, 2.0 KiB" in ls.stdout
    dry = run_cli("store", "prune", "--out", str(out), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would remove 4 stale records") and orphan.exists()
    pruned = run_cli("store", "prune", "--out", str(out))
    assert pruned.returncode == 0 and pruned.stdout.startswith("removed 4 stale records") and not orphan.exists()
    assert "1 orphan artifact files (2.0 KiB)" in pruned.stdout
    assert len(list((out / "artifacts").glob("*.npz"))) == 2
    again = run_cli("run", *TINY, "--epochs", "2", "--out", str(out))
    assert again.returncode == 0 and _trained(again.stderr) == [] and "reusing 2 of 2 trained folds" in again.stderr


def test_two_runs_on_one_directory_train_each_fold_once(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "lusbench.cli", "run", *TINY, "--out", str(out)]
    env = {**os.environ, "CI": "1"}
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    stderrs = [err for _, err in results]
    assert sorted(len(_trained(err)) for err in stderrs) == [0, 2]  # one trained both folds, the other reused them
    waited = next(err for err in stderrs if not _trained(err))
    assert "is in use by another lusbench run (pid" in waited and "reusing 2 of 2 trained folds" in waited
    assert len(list((out / "artifacts").glob("*.npz"))) == 2
    doc = json.loads((out / "leaderboard.json").read_text())
    assert [r["strategy"] for r in doc["rows"] if not r["label_row"]] == ["threshold:0.5"]
