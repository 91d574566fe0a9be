"""docs/own-data.md, followed as written: its Python makes a folder of PNGs, its commands take it to a leaderboard."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def test_own_data_page_runs_as_written(tmp_path):
    page = (REPO / "docs" / "own-data.md").read_text()
    (script,) = re.findall(r"```python\n(.*?)```", page, re.S)
    commands = [line for block in re.findall(r"```sh\n(.*?)```", page, re.S) for line in block.splitlines() if line]
    assert [c.split()[:3] for c in commands] == [["lusbench", "data", "init"], ["lusbench", "data", "validate"],
                                                 ["lusbench", "data", "preview"], ["lusbench", "run", "--dataset"],
                                                 ["lusbench", "leaderboard"]]
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "my-lus" / "images").glob("*.png"))) == 48
    env = {"LUSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    outputs = []
    for command in commands:
        proc = run_cli(*shlex.split(command)[1:], cwd=tmp_path, env=env)
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        outputs.append(proc.stdout + proc.stderr)
    assert "classes     b_lines, effusion" in outputs[0]
    assert outputs[1].rstrip().endswith("valid")
    assert (tmp_path / "my-lus-preview.png").read_bytes()[:4] == b"\x89PNG"
    assert "task sf-ratio skipped" in outputs[3] and "soft_dice" in outputs[4]
