"""Shared test helpers: run the real CLI in a subprocess, and fake-install a plugin distribution.

Tests are hermetic: whatever outside plugins the developer's environment has installed, the test process
(and every subprocess it starts, which inherits os.environ) loads only the built-ins, plus the ``-p``
modules and the ``plugin_site`` distributions a test asks for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOW_ENV = "LUSBENCH_PLUGINS"
STRICT_ENV = "LUSBENCH_STRICT_PLUGINS"
_saved_env: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    # Set in pytest_configure, not in a fixture: module-level code of test files (collection) and
    # session-scoped fixtures load plugins too, before any function-scoped fixture runs.
    for name in (ALLOW_ENV, STRICT_ENV):
        _saved_env[name] = os.environ.pop(name, None)
    os.environ[ALLOW_ENV] = "none"  # built-ins always load; outside plugins only where a test allows them


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lusbench.cli ARGS`` as a real process; ``env`` entries are added to os.environ."""
    full_env = {**os.environ, "CI": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lusbench.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def write_distribution(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Install a minimal distribution into ``site`` the way pip lays it out: modules plus a dist-info
    with METADATA and an ``entry_points.txt`` in the ``lusbench`` group. Put ``site`` on PYTHONPATH."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lusbench]\n{lines}")
    return site


@pytest.fixture
def plugin_site(tmp_path: Path):
    """Returns ``install(dist, entry_points, modules) -> env`` with PYTHONPATH pointing at the fake site and
    ``LUSBENCH_PLUGINS`` allowing the entry points installed so far (the hermetic default allows none)."""
    allowed: list[str] = []

    def install(dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> dict[str, str]:
        site = write_distribution(tmp_path / "site", dist, entry_points, modules)
        allowed.extend(entry_points)
        return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
                ALLOW_ENV: ",".join(allowed)}

    return install
