"""What the quickstart's and docs/ci.md's commands write into a clone is ignored by git; the baseline is not."""

import subprocess

from tests.conftest import REPO


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


def test_files_the_documented_commands_write_are_ignored():
    for path in ("leaderboard.json", "report.html", "lusbench-runs/results.sqlite", "preview.png"):
        assert _ignored(path), path
    # ... but not what must be committed.
    for path in ("benchmarks/baselines/quick.json", "docs/leaderboard.md"):
        assert not _ignored(path), path
