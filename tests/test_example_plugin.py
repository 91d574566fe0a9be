"""The plugin guide's example package, installed with a real `pip install` and used through the CLI."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli

EXAMPLE = REPO / "docs" / "examples" / "lusbench-example-strategy"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(EXAMPLE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert list(site.glob("lusbench_ignore_band-1.0.0.dist-info"))
    return {"PYTHONPATH": str(site), "LUSBENCH_PLUGINS": "ignore-band"}  # tests load no outside plugin unasked


def test_installed_example_is_listed(installed):
    doc = json.loads(run_cli("plugins", "--json", env=installed).stdout)
    entry = next(e for e in doc["label_strategies"] if e["name"] == "ignore-band")
    assert entry["plugin"] == "ignore-band"
    assert entry["summary"].startswith("Hard targets at HIGH")
    assert {"name": "ignore-band", "module": "lusbench_ignore_band", "source": "entry point (lusbench-ignore-band 1.0.0)",
            "error": None} in doc["plugins"]


def test_bad_example_arguments_are_one_line(installed):
    proc = run_cli("run", "--strategy", "ignore-band:0.9,0.1", env=installed)
    assert proc.returncode == 2
    assert proc.stderr == "lusbench run: error: --strategy 'ignore-band:0.9,0.1': low must be below high, got 0.9 >= 0.1\n"


@pytest.mark.slow
def test_installed_example_runs_through_the_cli(installed, tmp_path):
    proc = run_cli("run", "--preset", "quick", "--dataset", "synthetic-lus:patients=10,size=32", "--folds", "2",
                   "--epochs", "1", "--strategy", "ignore-band:0.3,0.7", "--strategy", "threshold:0.5",
                   "--out", str(tmp_path / "run"), env=installed)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    row = next(r for r in doc["rows"] if r["strategy"] == "ignore-band:0.3,0.7")
    assert 0.0 <= row["metrics"]["dice"]["mean"] <= 1.0
