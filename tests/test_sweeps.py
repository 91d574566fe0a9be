"""Sweeps A..B/STEP in strategy specs: exact decimal values, canonical names, one-line errors, shown by plugins."""

import json

import pytest
from conftest import run_cli

from lusbench.api.plugins import load_plugins
from lusbench.api.specs import MAX_SWEEP, expand_spec, sweep_values
from lusbench.errors import UserError


@pytest.mark.parametrize(("text", "expected"), [
    ("threshold:0.5..1.0/0.1", [f"threshold:{v}" for v in ("0.5", "0.6", "0.7", "0.8", "0.9", "1")]),
    ("band:0.1..0.3/0.1,0.8", ["band:0.1,0.8", "band:0.2,0.8", "band:0.3,0.8"]),
    ("weighted:0..0.2/0.1,weight=c", ["weighted:0,weight=c", "weighted:0.1,weight=c", "weighted:0.2,weight=c"]),
    ("x:k=1..3/1", ["x:k=1", "x:k=2", "x:k=3"]),
    ("x:0.1..0.35/0.1", ["x:0.1", "x:0.2", "x:0.3"]),  # B off the grid: the values up to B
    ("x:0.7..0.7/0.1", ["x:0.7"]),
    ("x:10..100/30", ["x:10", "x:40", "x:70", "x:100"]),
    ("x:0..1/1,5..6/1", ["x:0,5", "x:0,6", "x:1,5", "x:1,6"]),  # every combination, the last fastest
    ("soft", ["soft"]),
    ("threshold:0.6", ["threshold:0.6"]),
    ("folder:../data/x", ["folder:../data/x"]),  # a path is no sweep
    ('x:"0.1..0.3/0.1"', ['x:"0.1..0.3/0.1"']),  # quoted: literal
])
def test_expansion(text, expected):
    assert expand_spec(text) == expected


def test_values_are_exact_decimals_not_accumulated_floats():
    values = sweep_values("0.1..0.9/0.1")
    assert values == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    assert [float(v) for v in values][2] == 0.3  # 0.1 + 2 * 0.1 is 0.30000000000000004 in floats


@pytest.mark.parametrize(("text", "message"), [
    ("x:0.5..0.1/0.1", "B must not be below A"),
    ("x:0.1..0.5/0", "STEP must be positive"),
    ("x:0.1..0.5/-0.1", "STEP must be positive"),
    ("x:0.5..x/0.1", "not A..B/STEP with numbers"),
    ("x:0..1/0.001", f"more than {MAX_SWEEP}"),
    ("x:0..1/0.1,0..1/0.1", "expand to 121 specs"),
    ("x:0..inf/1", "finite"),
])
def test_bad_ranges_are_one_line_value_errors(text, message):
    with pytest.raises(ValueError, match=message) as info:
        expand_spec(text)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def registry():
    return load_plugins().strategies


def test_registry_names_the_sweep_in_errors_of_an_expanded_spec(registry):
    specs = registry.expand("threshold:0.5..1.5/0.5")
    assert [s for s, _ in specs] == ["threshold:0.5", "threshold:1", "threshold:1.5"]
    with pytest.raises(UserError) as info:
        for spec, label in specs:
            registry.create(spec, label)
    assert str(info.value) == ("--strategy threshold:0.5..1.5/0.5 expands to 'threshold:1.5': threshold must be in "
                               "(0, 1], got 1.5")
    with pytest.raises(UserError, match="^--strategy 'band:0.3..0.1/0.1,0.8': sweep"):
        registry.expand("band:0.3..0.1/0.1,0.8")
    assert registry.expand("soft") == [("soft", None)]


def test_outside_strategies_are_swept_too(registry, tmp_path, monkeypatch):
    (tmp_path / "sw_plugin.py").write_text(
        "import lusbench\nfrom lusbench.train.strategy import LabelStrategy\n\n"
        "class Scaled(LabelStrategy):\n    def __init__(self, k):\n        self.name = f'scaled:{float(k):g}'\n\n"
        "    def targets(self, confidence):\n        return confidence, None\n\n"
        "@lusbench.hookimpl\ndef register_label_strategies(register):\n    register('scaled', Scaled)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    strategies = load_plugins(["sw_plugin"]).strategies
    assert [strategies.create(s, label).name for s, label in strategies.expand("scaled:1..2/0.5")] == [
        "scaled:1", "scaled:1.5", "scaled:2"]


def test_plugins_expand_shows_the_strategies_a_sweep_stands_for():
    proc = run_cli("plugins", "--expand", "threshold:0.5..1.0/0.1", "--expand", "band:0.1..0.3/0.1,0.8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "threshold:0.5..1.0/0.1 -> 6 strategies: threshold:0.5, threshold:0.6, threshold:0.7, threshold:0.8, "
        "threshold:0.9, threshold:1",
        "band:0.1..0.3/0.1,0.8 -> 3 strategies: band:0.1,0.8, band:0.2,0.8, band:0.3,0.8"]
    doc = json.loads(run_cli("plugins", "--expand", "smooth:0..0.2/0.1", "--json").stdout)
    assert doc == {"expansions": [{"spec": "smooth:0..0.2/0.1", "strategies": ["smooth:0", "smooth:0.1", "smooth:0.2"]}]}


@pytest.mark.parametrize(("args", "stderr"), [
    (("plugins", "--expand", "threshold:0.5..1.5/0.5"),
     "lusbench plugins: error: --expand threshold:0.5..1.5/0.5 expands to 'threshold:1.5': threshold must be in (0, 1], "
     "got 1.5\n"),
    (("run", "--strategy", "threshold:1..0.5/0.1"),
     "lusbench run: error: --strategy 'threshold:1..0.5/0.1': sweep '1..0.5/0.1': B must not be below A (0.5 < 1)\n"),
    (("run", "--strategy", "threshold:0.5..1/0.25", "--strategy", "threshold:0.75"),
     "lusbench run: error: --strategy given twice: threshold:0.75\n"),
])
def test_bad_sweeps_fail_the_command_with_one_line(args, stderr, tmp_path):
    proc = run_cli(*args, "--out", str(tmp_path / "run")) if args[0] == "run" else run_cli(*args)
    assert proc.returncode == 2 and proc.stderr == stderr
