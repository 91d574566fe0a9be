"""``lusbench.dataset_from_arrays`` refuses what a silent cast would corrupt, and the docs' 30-line plugin works."""

from __future__ import annotations

import re

import numpy as np
import pytest

import lusbench
from tests.conftest import REPO, run_cli


def arrays(n: int = 6, size: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.random((n, size, size)),
        "confidence": rng.integers(0, 11, (n, 1, size, size)) / 10,
        "patient": np.arange(n) // 2,
    }


def make(**changes):
    values = {**arrays(), **changes}
    return lusbench.dataset_from_arrays("mine", values["images"], values["confidence"], values["patient"],
                                        confidence_scale=10, classes=("b_lines",))


def test_valid_float_arrays_become_exact_levels():
    values = arrays()
    ds = make()
    assert ds.confidence.dtype == np.uint8 and ds.images.dtype == np.uint8
    assert np.array_equal(ds.confidence_float(), values["confidence"].astype(np.float32))
    assert np.array_equal(ds.images, np.round(values["images"] * 255).astype(np.uint8))
    assert ds.visit.tolist() == [1] * 6 and ds.zone.tolist() == [0] * 6


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"confidence": np.where(np.arange(64).reshape(1, 1, 8, 8) == 5, np.nan, arrays()["confidence"])},
         r"confidence has 6 NaN or infinite values \(first in frame 0\)"),
        ({"confidence": -arrays()["confidence"]}, r"confidence must lie in \[0, 1\], got values in \[-1, "),
        ({"images": arrays()["images"] * 255}, r"images must lie in \[0, 1\].*looks like 0\.\.255: divide by 255"),
        ({"confidence": np.full((6, 1, 8, 8), 0.55)},
         r"confidence 0\.55 \(frame 0, class 0\) is not a level of the declared scale 10"),
        ({"patient": np.arange(6) / 2}, r"patient must hold integers"),
        ({"patient": np.arange(5)}, r"patient must have one entry per frame \(6\)"),
    ],
)
def test_bad_arrays_are_refused_naming_the_problem(changes, message):
    with pytest.raises(ValueError, match=message):
        make(**changes)


def _docs_plugin() -> str:
    text = (REPO / "docs" / "datasets.md").read_text()
    section = text[text.index("## Your own arrays"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_example_plugin_is_short_and_works_through_the_cli(tmp_path):
    code = _docs_plugin()
    assert len(code.strip().splitlines()) <= 32
    (tmp_path / "my_lus.py").write_text(code)
    values = arrays(n=8)
    np.savez(tmp_path / "frames.npz", images=np.round(values["images"] * 255).astype(np.uint8),
             confidence=values["confidence"], patient=values["patient"])
    env = {"PYTHONPATH": str(tmp_path)}
    ok = run_cli("-p", "my_lus", "data", "validate", f"npz-frames:{tmp_path / 'frames.npz'}", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "frames      8 images" in ok.stdout and ok.stdout.endswith("valid\n")
    # A broken file is one line naming the spec, not a traceback.
    # A realistic mistake: confidence stored as levels 0..10 instead of fractions.
    np.savez(tmp_path / "bad.npz", images=np.round(values["images"] * 255).astype(np.uint8),
             confidence=values["confidence"] * 10, patient=values["patient"])
    bad = run_cli("-p", "my_lus", "data", "validate", f"npz-frames:{tmp_path / 'bad.npz'}", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "bad.npz" in bad.stderr and "confidence must lie in [0, 1], got values in [0, 10]" in bad.stderr
