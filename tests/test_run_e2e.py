"""`lusbench run` end to end on real (small) training runs: output, determinism, resume, kill, check."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from lusbench.results.collect import fold_record_key, read_manifest
from lusbench.results.store import ResultsStore
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# Small enough for CI (the quick preset's 60 patients at 32x32, but 2 folds of 1 epoch), and enough patients
# for every downstream task to run.
SMALL = ["--preset", "quick", "--folds", "2", "--epochs", "1"]
# Only the strategies named: the reference strategy is not trained beside them, so fold counts are theirs alone.
ALONE = ["--reference", "none"]


def _run(tmp_path, name, *strategies, extra=()):
    out = tmp_path / name
    args = ["run", *SMALL, *[a for s in strategies for a in ("--strategy", s)], "--out", str(out),
            "--json", str(out / "copy.json"), *extra]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "leaderboard.json").read_text()), proc


def _metrics(doc):
    return {row["strategy"]: row["metrics"] for row in doc["rows"]}


def _trained(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("[") and " fold " in line]


def test_run_writes_the_leaderboard_of_design_section_5(tmp_path):
    doc, proc = _run(tmp_path, "a", "threshold:0.5", "threshold:0.6", "soft", "weighted")
    assert doc["schema"] == "lusbench.leaderboard/3"
    assert set(doc["config"]) >= {"dataset", "model", "preset", "seeds", "folds", "eval_threshold", "config_hash"}
    assert set(doc["environment"]) >= {"lusbench", "torch", "device", "platform"}
    strategies = [r["strategy"] for r in doc["rows"] if not r["label_row"]]
    assert sorted(strategies) == ["soft", "threshold:0.5", "threshold:0.6", "weighted"]
    assert {r["strategy"] for r in doc["rows"] if r["label_row"]} == {"labels:expert", "labels:true"}
    names = {m["name"] for m in doc["metrics"]}
    assert {"dice", "dice.b_lines", "hd95", "ece", "sf_ratio.mae", "sf_change.auroc", "readmission_30d.auroc"} <= names
    for m in doc["metrics"]:
        assert set(m) >= {"name", "higher_is_better", "description"}
    dice = _metrics(doc)["soft"]["dice"]
    assert set(dice) >= {"mean", "ci_low", "ci_high", "n"} and dice["ci_low"] <= dice["mean"] <= dice["ci_high"]
    assert json.loads((tmp_path / "a" / "copy.json").read_text()) == doc
    assert len(_trained(proc)) == 4 * 2
    # The terminal table names every row.
    for strategy in strategies:
        assert strategy in proc.stdout
    _assert_no_patient_crosses_a_split(tmp_path / "a", strategies, folds=2)
    _assert_checkpoints_reproduce_the_stored_predictions(tmp_path / "a", "soft", folds=2)


def _assert_no_patient_crosses_a_split(run_dir, strategies, folds):
    """In every trained fold, the held-out patients were never seen in training or validation, and each
    seed's held-out folds cover every frame exactly once."""
    with ResultsStore(run_dir) as store:
        manifest = read_manifest(store)
        patient = np.asarray(manifest["frame_patient"])
        for strategy in strategies:
            held_out = []
            for fold in range(folds):
                arrays = store.load_arrays(fold_record_key(manifest, strategy, 0, fold))
                test, fit, val = (set(patient[arrays[k]]) for k in ("frames", "fit_frames", "val_frames"))
                assert test and fit and val
                assert not test & fit and not test & val and not fit & val
                assert test | fit | val == set(patient)
                held_out.append(arrays["frames"])
            assert np.array_equal(np.sort(np.concatenate(held_out)), np.arange(len(patient)))


def _assert_checkpoints_reproduce_the_stored_predictions(run_dir, strategy, folds):
    import torch

    from lusbench.api.plugins import load_plugins
    from lusbench.results.collect import load_fold_model

    plugins = load_plugins()
    dataset = plugins.datasets.create(json.loads((run_dir / "leaderboard.json").read_text())["config"]["dataset"])
    with ResultsStore(run_dir) as store:
        manifest = read_manifest(store)
        for fold in range(folds):
            arrays = store.load_arrays(fold_record_key(manifest, strategy, 0, fold))
            model = load_fold_model(run_dir, strategy, 0, fold, plugins)
            images = torch.from_numpy(dataset.images[arrays["frames"]]).float().div(255).unsqueeze(1)
            with torch.no_grad():
                probs = torch.sigmoid(model(images)).numpy()
            assert np.abs(np.round(probs * 255) - arrays["probs"]).max() <= 1


def test_an_absent_reference_is_trained_too_and_none_skips_it(tmp_path):
    doc, proc = _run(tmp_path, "a", "soft", extra=["--no-tasks"])
    assert "reference strategy threshold:0.5 is not among --strategy: training it too" in proc.stderr
    assert [r["strategy"] for r in doc["rows"] if not r["label_row"]] == ["threshold:0.5", "soft"]
    assert doc["comparison_note"] is None and set(next(r for r in doc["rows"] if r["strategy"] == "soft")["comparison"])
    assert len(_trained(proc)) == 2 * 2
    out = tmp_path / "a"
    assert f"leaderboard written to {out / 'leaderboard.json'} and {out / 'copy.json'}" in proc.stdout
    alone, proc = _run(tmp_path, "b", "soft", extra=["--no-tasks", "--reference", "none"])
    assert "training it too" not in proc.stderr and len(_trained(proc)) == 2
    assert [r["strategy"] for r in alone["rows"] if not r["label_row"]] == ["soft"]
    assert "no reference strategy" in alone["comparison_note"]


def test_threads_are_recorded_and_part_of_the_training_key(tmp_path):
    doc, _ = _run(tmp_path, "a", "threshold:0.5", extra=["--no-tasks"])
    assert doc["environment"]["torch_threads"] == 1  # the default
    two, proc = _run(tmp_path, "a", "threshold:0.5", extra=["--no-tasks", "--threads", "2"])
    assert two["environment"]["torch_threads"] == 2
    assert len(_trained(proc)) == 2 and "the torch thread count changed (1 -> 2)" in proc.stderr


def test_same_seed_gives_identical_metrics(tmp_path):
    first, _ = _run(tmp_path, "a", "threshold:0.6", "soft")
    second, _ = _run(tmp_path, "b", "threshold:0.6", "soft")
    assert _metrics(first) == _metrics(second)


def test_rerun_trains_nothing_and_a_new_strategy_trains_only_itself(tmp_path):
    first, proc = _run(tmp_path, "a", "threshold:0.6", extra=ALONE)
    assert len(_trained(proc)) == 2
    again, proc = _run(tmp_path, "a", "threshold:0.6", extra=ALONE)
    assert _trained(proc) == [] and "reusing 2 of 2 trained folds" in proc.stderr
    assert _metrics(again) == _metrics(first)
    grown, proc = _run(tmp_path, "a", "threshold:0.6", "soft", extra=ALONE)
    assert [line.split(":")[0].split("] ")[1] for line in _trained(proc)] == ["soft seed 0 fold 0", "soft seed 0 fold 1"]
    assert _metrics(grown)["threshold:0.6"] == _metrics(first)["threshold:0.6"]
    forced, proc = _run(tmp_path, "a", "threshold:0.6", extra=["--force", *ALONE])
    assert len(_trained(proc)) == 2 and _metrics(forced)["threshold:0.6"] == _metrics(first)["threshold:0.6"]


def test_killed_run_resumes_to_the_same_results(tmp_path):
    reference, _ = _run(tmp_path, "uninterrupted", "threshold:0.6", "soft", extra=ALONE)
    out = tmp_path / "killed"
    args = ["run", *SMALL, *ALONE, "--strategy", "threshold:0.6", "--strategy", "soft", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "lusbench.cli", *args], env={**os.environ, "CI": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.sqlite"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            with sqlite3.connect(db, timeout=5) as conn:
                try:
                    if conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] >= 1:
                        break
                except sqlite3.OperationalError:
                    pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "leaderboard.json").exists()
    resumed, rerun = _run(tmp_path, "killed", "threshold:0.6", "soft", extra=ALONE)
    assert "reusing" in rerun.stderr and len(_trained(rerun)) < 4
    assert _metrics(resumed) == _metrics(reference)


def test_check_against_real_runs(tmp_path):
    doc, _ = _run(tmp_path, "a", "threshold:0.5", "soft")
    baseline = tmp_path / "baseline.json"
    current = tmp_path / "a" / "leaderboard.json"
    proc = run_cli("check", "--baseline", str(baseline), "--json", str(current))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # no baseline yet
    assert run_cli("check", "--baseline", str(baseline), "--json", str(current), "--update-baseline").returncode == 0
    rerun, _ = _run(tmp_path, "a", "threshold:0.5", "soft")
    proc = run_cli("check", "--baseline", str(baseline), "--json", str(current))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    better = json.loads(baseline.read_text())
    row = next(r for r in better["rows"] if r["strategy"] == "soft")
    row["metrics"]["dice"]["mean"] += 0.5
    baseline.write_text(json.dumps(better))
    proc = run_cli("check", "--baseline", str(baseline), "--json", str(current))
    assert proc.returncode == 1, proc.stdout + proc.stderr

    _run(tmp_path, "other", "threshold:0.5", "soft", extra=["--eval-threshold", "0.7"])
    proc = run_cli("check", "--baseline", str(baseline), "--json", str(tmp_path / "other" / "leaderboard.json"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
