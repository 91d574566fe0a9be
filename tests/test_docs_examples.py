"""The commands and code the docs show, run for real against a small finished run."""

import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def _block_after(page: str, heading: str, language: str) -> str:
    text = (REPO / page).read_text()
    section = text[text.index(heading):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A directory holding a finished quick-sized run in `lusbench-runs`, as the docs assume."""
    cwd = tmp_path_factory.mktemp("docs")
    proc = run_cli("run", "--preset", "quick", "--folds", "2", "--epochs", "1", "--strategy", "threshold:0.6",
                   "--strategy", "threshold:0.5", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd


def test_quickstart_other_views_commands(run_dir):
    commands = [line.split("#")[0].strip() for line in _block_after("docs/quickstart.md", "## Other views", "sh").splitlines()]
    commands = [c for c in commands if c]
    assert len(commands) == 4
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "lusbench"
        proc = run_cli(*args[1:], cwd=run_dir)
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
    assert (run_dir / "lusbench-runs" / "report.html").stat().st_size > 10_000
    assert (run_dir / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_loading_example(run_dir):
    code = _block_after("docs/cli/run.md", "## The run directory", "python")
    code += "print(type(model).__name__, model.training)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=run_dir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Unet", "False"]
