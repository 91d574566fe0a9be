"""Acceptance of folder datasets through real runs: the synthetic dataset exported to a folder gives the same
leaderboard as the synthetic dataset itself, and a dataset given only as per-rater masks runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SPEC = "synthetic-lus:patients=6,zones=2,size=32"
TINY = ["--preset", "quick", "--strategy", "threshold:0.5", "--reference", "none", "--folds", "2", "--epochs", "1",
        "--seeds", "1", "--device", "cpu"]


def test_the_exported_synthetic_dataset_gives_the_same_leaderboard(tmp_path):
    env = {"LUSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("data", "export", SPEC, "--out", str(tmp_path / "ds"), env=env).returncode == 0
    proc = run_cli("data", "validate", str(tmp_path / "ds"), env=env)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("valid"), proc.stderr
    boards = {}
    for name, dataset in (("synthetic", SPEC), ("folder", f"folder:{tmp_path / 'ds'}")):
        proc = run_cli("run", *TINY, "--dataset", dataset, "--out", str(tmp_path / name),
                       "--json", str(tmp_path / f"{name}.json"), env=env)
        assert proc.returncode == 0, proc.stderr
        boards[name] = json.loads((tmp_path / f"{name}.json").read_text())
    synthetic, folder = boards["synthetic"], boards["folder"]
    assert synthetic["rows"] and synthetic["metrics"]
    for key in ("rows", "metrics", "primary_metric", "folds", "statistics"):
        assert folder[key] == synthetic[key], key
    assert synthetic["primary_metric"] == "true.dice"


def test_a_dataset_of_per_rater_masks_only_runs_end_to_end(tmp_path):
    """Three raters' masks as PNG folders, no confidence maps, no clinical tables: init, validate, run."""
    rng = np.random.default_rng(3)
    root = tmp_path / "raters"
    for i in range(24):
        name = f"p{i // 4}_v1_z{i % 4}"
        (root / "images").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 80, (32, 32), dtype=np.uint8)
        top = int(rng.integers(4, 20))
        image[top: top + 8] += 150  # a bright band the raters outline, each a little differently
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        for r in range(3):
            mask = np.zeros((32, 32), np.uint8)
            mask[top + r - 1: top + 8 + r - 1] = 255
            (root / "raters" / f"rater-{r}" / "b_lines").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "raters" / f"rater-{r}" / "b_lines" / f"{name}.png")
    env = {"LUSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("data", "init", str(root), env=env).returncode == 0
    manifest = json.loads((root / "lusbench.json").read_text())
    del manifest["visits"], manifest["patients"]  # no clinical data: segmentation only
    (root / "lusbench.json").write_text(json.dumps(manifest))
    proc = run_cli("data", "validate", str(root), env=env)
    assert proc.returncode == 0 and "3 rater(s) per frame" in proc.stdout, proc.stderr
    proc = run_cli("run", *TINY, "--dataset", f"folder:{root}", "--out", str(tmp_path / "run"),
                   "--json", str(tmp_path / "lb.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    board = json.loads((tmp_path / "lb.json").read_text())
    assert board["primary_metric"] == "rater.dice"
    assert "skipped: dataset has no" in proc.stderr
    assert {m["name"] for m in board["metrics"]} >= {"rater.dice", "dice"}
