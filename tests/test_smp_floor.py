"""The oldest segmentation-models-pytorch that pyproject.toml allows really builds and runs every built-in model.

The smp builders drop the encoder stages a shallow model never runs; smp releases before 0.5 still call every
stage in the encoder's forward, so the floor is where that works, and this test installs exactly the floor
(without its dependencies, over the installed ones) and runs a forward pass of each model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def smp_floor() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'"segmentation-models-pytorch>=([0-9.]+)"', text)
    assert match, "pyproject.toml must state a floor for segmentation-models-pytorch"
    return match.group(1)


@pytest.mark.slow
def test_every_builtin_model_runs_on_the_oldest_allowed_smp(tmp_path):
    floor = smp_floor()
    target = tmp_path / "old-smp"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                              f"segmentation-models-pytorch=={floor}"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    code = (
        "import torch, segmentation_models_pytorch as smp\n"
        "from lusbench_builtins.models import unet, unetplusplus, fpn\n"
        "print(smp.__version__)\n"
        "for builder in (unet(), unet('resnet18', depth='3'), unet('resnet34'), unetplusplus(), fpn()):\n"
        "    out = builder.build(1, 5)(torch.zeros(2, 1, 32, 32))\n"
        "    assert tuple(out.shape) == (2, 5, 32, 32), (builder.name, out.shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO / "plugins"), str(REPO)])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == floor
