"""The plugin manager through its real paths: entry points in a dist-info, -p modules, env switches."""

import json
import sys
import textwrap

import pytest

from lusbench.api.plugins import load_plugins
from lusbench.errors import PluginError, UserError
from tests.conftest import run_cli

GOOD = textwrap.dedent(
    '''
    import lusbench
    from lusbench.train.strategy import LabelStrategy

    class Half(LabelStrategy):
        name = "half"
        def targets(self, confidence):
            return confidence * 0.5, None

    @lusbench.hookimpl
    def register_label_strategies(register):
        """unused docstring"""
        register("half", lambda: Half())
    '''
)


def test_builtins_are_registered_through_entry_points():
    plugins = load_plugins()
    sources = {info.name: info.source for info in plugins.loaded}
    assert {"label-strategies", "smp-models", "synthetic-lus", "clinical-tasks"} <= set(sources)
    assert set(sources.values()) == {"builtin"}
    assert {"threshold", "soft", "weighted"} <= set(plugins.strategies.names())
    assert "synthetic-lus" in plugins.datasets.names()
    assert "unet" in plugins.models.names()
    assert {"sf-ratio", "sf-change", "readmission-30d"} <= set(plugins.tasks.names())
    assert plugins.strategies.entries()[0].plugin == "label-strategies"


def test_outside_entry_point_plugin_is_listed(plugin_site):
    env = plugin_site("lusbench-half", {"half": "half_plugin"}, {"half_plugin": GOOD})
    proc = run_cli("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"name": "half", "plugin": "half", "summary": ""} in doc["label_strategies"]
    assert any(p["name"] == "half" and p["source"] == "entry point (lusbench-half 1.0)" for p in doc["plugins"])


def test_broken_plugin_is_reported_and_skipped(plugin_site):
    env = plugin_site("lusbench-broken", {"broken": "broken_plugin", "half": "half_plugin"},
                      {"broken_plugin": "raise RuntimeError('boom at import')\n", "half_plugin": GOOD})
    proc = run_cli("plugins", "--json", env=env)
    assert proc.returncode == 0
    assert "plugin 'broken' (broken_plugin) failed to load: RuntimeError: boom at import; skipped" in proc.stderr
    doc = json.loads(proc.stdout)
    assert "half" in [e["name"] for e in doc["label_strategies"]]
    assert [p["error"] for p in doc["plugins"] if p["name"] == "broken"][0].startswith("plugin 'broken'")
    table = run_cli("plugins", env=env).stdout
    assert "failed to load: RuntimeError: boom at import" in table and "half_plugin" in table


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_site):
    env = plugin_site("lusbench-broken", {"broken": "broken_plugin"}, {"broken_plugin": "import nosuchmodule_xyz\n"})
    proc = run_cli("plugins", env={**env, "LUSBENCH_STRICT_PLUGINS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "plugin 'broken' (broken_plugin) failed to load: ModuleNotFoundError" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hook_that_raises_is_skipped_without_registering_anything(plugin_site):
    source = GOOD.replace('register("half", lambda: Half())', 'register("half", lambda: Half())\n    raise KeyError("late")')
    env = plugin_site("lusbench-half", {"half": "half_plugin"}, {"half_plugin": source})
    proc = run_cli("plugins", "--json", env=env)
    assert proc.returncode == 0
    assert "plugin 'half' failed in register_label_strategies: KeyError: 'late'; skipped" in proc.stderr
    assert "half" not in [e["name"] for e in json.loads(proc.stdout)["label_strategies"]]


@pytest.mark.parametrize(("allow", "loaded"), [("none", False), ("", False), ("other", False), ("half", True)])
def test_outside_plugins_can_be_restricted_or_disabled(plugin_site, allow, loaded):
    env = plugin_site("lusbench-half", {"half": "half_plugin"}, {"half_plugin": GOOD})
    proc = run_cli("plugins", "--json", env={**env, "LUSBENCH_PLUGINS": allow})
    doc = json.loads(proc.stdout)
    assert ("half" in [e["name"] for e in doc["label_strategies"]]) is loaded
    assert "threshold" in [e["name"] for e in doc["label_strategies"]]  # built-ins always load


def test_duplicate_name_is_an_error_naming_both_plugins(plugin_site):
    clash = GOOD.replace('register("half"', 'register("soft"')
    env = plugin_site("lusbench-clash", {"clash": "clash_plugin"}, {"clash_plugin": clash})
    proc = run_cli("plugins", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "lusbench plugins: error: label_strategies name 'soft' is registered by both plugin 'label-strategies' "
        "and plugin 'clash'"
    )


def test_dash_p_loads_a_module_for_one_command(tmp_path, monkeypatch):
    (tmp_path / "half_module.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins(["half_module"])
    assert plugins.strategies.create("half").name == "half"
    assert "half" not in load_plugins().strategies.names()


def test_dash_p_unknown_module_is_a_one_line_error():
    proc = run_cli("-p", "no_such_plugin_module", "plugins")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "lusbench plugins: error: -p no_such_plugin_module: cannot import plugin module: "
        "ModuleNotFoundError: No module named 'no_such_plugin_module'"
    )
    with pytest.raises(PluginError):
        load_plugins(["no_such_plugin_module"])


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError, match=r"--strategy 'nosuch': unknown name 'nosuch' \(known: .*soft.*threshold"):
        load_plugins().strategies.create("nosuch")


def test_plugins_command_does_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "from lusbench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['plugins']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'segmentation_models_pytorch', 'sklearn', 'matplotlib') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
