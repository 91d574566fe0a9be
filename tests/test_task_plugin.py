"""A fourth downstream task added from outside lusbench, through the real plugin path (``-p MODULE``).

The plugin module is the example in docs/tasks.md, verbatim, so the guide cannot drift from what works.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from test_features import planted_dataset

from lusbench.api.plugins import load_plugins
from lusbench.errors import UserError
from lusbench.evaluate.features import compute_features

REPO = Path(__file__).resolve().parents[1]
MODULE = "lusbench_hypoxemia"


def _example_source() -> str:
    guide = (REPO / "docs" / "tasks.md").read_text()
    section = guide[guide.index("## Writing a fourth task"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(_example_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield load_plugins([MODULE])
    sys.modules.pop(MODULE, None)


def test_the_guide_example_defines_the_hook():
    assert "def register_downstream_tasks(register):" in _example_source()


def test_outside_task_registers_next_to_the_builtins(plugins):
    assert {"hypoxemia", "sf-ratio", "sf-change", "readmission-30d"} <= set(plugins.tasks.names())
    entry = plugins.tasks.entries()[plugins.tasks.names().index("hypoxemia")]
    assert entry.plugin == MODULE
    assert entry.summary == "Flag hypoxemic visits (S/F below 235) from the visit's segmentation features (AUROC)."
    assert any(info.name == MODULE and info.source == "-p" and info.error is None for info in plugins.loaded)
    with pytest.raises(UserError, match="--task 'hypoxemia:3'"):
        plugins.tasks.create("hypoxemia:3")  # the example takes no arguments


def test_outside_task_evaluates_with_patient_grouped_cv(plugins):
    ds = planted_dataset(patients=40)
    task = plugins.tasks.create("hypoxemia")
    assert task.skip_reason(ds) is None
    assert [d.name for d in task.metric_defs()] == ["hypoxemia.auroc"]
    result = task.evaluate(compute_features(ds.true_masks.astype(np.float32), ds), ds, seed=0)
    assert list(result) == ["hypoxemia.auroc"] and len(result["hypoxemia.auroc"]) == 5
    assert np.mean(result["hypoxemia.auroc"]) > 0.85  # the planted S/F follows the drawn findings
    # Visit rows with a label that varies within a patient: still no patient on both sides.
    _, patient, _ = task.targets(ds)
    for repeat in task.splits(ds, seed=0):
        for train, test in repeat:
            assert not set(patient[train]) & set(patient[test])


def test_outside_task_skips_a_dataset_without_sf(plugins):
    ds = planted_dataset(patients=4, zones=1)
    ds.visits = None
    assert plugins.tasks.create("hypoxemia").skip_reason(ds) == "dataset has no visits.sf_ratio"
