"""The install route docs/ci.md gives works outside a clone: build lusbench's wheel, install it into a fresh venv,
and run the CLI from another directory, the built-in plugins loading from the wheel, not from the clone.

The fresh venv reuses the project's installed dependencies (torch alone is gigabytes) through a directory of
links that leaves out lusbench's own (editable) installation, and installs the wheel with --no-deps.
"""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

OWN = ("lusbench-", "_editable_impl_lusbench", "__editable__", "lusbench_builtins")


def _dependencies_without_lusbench(tmp_path: Path) -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(OWN) and entry.name != "lusbench" and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    return deps


def test_the_built_wheel_installs_and_runs_outside_the_clone(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("lusbench-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    env_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (env_site / "lusbench-deps.pth").write_text(f"{_dependencies_without_lusbench(tmp_path)}\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    lusbench = str(env_dir / "bin" / "lusbench")
    version = subprocess.run([lusbench, "--version"], cwd=outside, env=env, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("lusbench "), version.stderr
    plugins = subprocess.run([lusbench, "plugins"], cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert plugins.returncode == 0, plugins.stderr
    for name in ("synthetic-lus", "threshold", "soft", "unet"):
        assert name in plugins.stdout
    where = subprocess.run([str(python), "-c", "import lusbench, lusbench_builtins; print(lusbench.__file__); "
                            "print(lusbench_builtins.__file__)"], cwd=outside, env=env, capture_output=True, text=True)
    for path in where.stdout.split():
        assert Path(path).is_relative_to(env_site) and not Path(path).is_relative_to(REPO), path
