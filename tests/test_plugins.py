"""The plugin manager through its real paths: entry points in a dist-info, -p modules, env switches."""

import json
import sys
import textwrap

import pytest

from lusbench.api.plugins import load_plugins
from lusbench.errors import PluginError, UserError
from tests.conftest import run_cli, write_distribution

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


CLASH = GOOD.replace('register("half", lambda: Half())', 'register("half", lambda: Half())\n    register("threshold", Half)')
CLASH_ERROR = (
    "label_strategies name 'threshold' is registered by both plugin 'label-strategies' and plugin 'clash'; "
    "uninstall the distribution lusbench-clash (pip uninstall lusbench-clash), or skip it with -p no:clash or "
    "LUSBENCH_PLUGINS=no:clash"
)


def test_name_clash_is_listed_by_the_plugins_command(plugin_site):
    env = plugin_site("lusbench-clash", {"clash": "clash_plugin"}, {"clash_plugin": CLASH})
    proc = run_cli("plugins", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"lusbench: warning: {CLASH_ERROR}\n"
    doc = json.loads(proc.stdout)
    owners = {e["name"]: e["plugin"] for e in doc["label_strategies"]}
    assert owners["threshold"] == "label-strategies"
    assert "half" not in owners  # the clashing plugin is not half-loaded
    assert [p["error"] for p in doc["plugins"] if p["name"] == "clash"] == [CLASH_ERROR]
    table = run_cli("plugins", env=env)
    assert table.returncode == 0
    assert "registered by both plugin" in table.stdout


def test_name_clash_stops_other_commands_naming_what_to_uninstall_or_skip(plugin_site):
    env = plugin_site("lusbench-clash", {"clash": "clash_plugin"}, {"clash_plugin": CLASH})
    proc = run_cli("run", "--strategy", "threshold:0.5", env=env)
    assert proc.returncode == 2
    assert proc.stderr == f"lusbench run: error: {CLASH_ERROR}\n"
    # Both ways of skipping it that the message names work: the run gets past plugin loading.
    for skip_env, args in [(env, ["-p", "no:clash"]), ({**env, "LUSBENCH_PLUGINS": "no:clash"}, [])]:
        proc = run_cli(*args, "run", "--strategy", "nosuch", env=skip_env)
        assert proc.returncode == 2
        assert proc.stderr.startswith("lusbench run: error: --strategy 'nosuch': unknown name 'nosuch'"), proc.stderr


TYPO = GOOD.replace("def register_label_strategies(register):", "def register_strategies(register):")


def test_misspelled_hook_is_a_warning_naming_the_plugin_and_the_hook(plugin_site):
    env = plugin_site("lusbench-typo", {"typo": "typo_plugin"}, {"typo_plugin": TYPO})
    message = "plugin 'typo' implements unknown hook 'register_strategies' (did you mean 'register_label_strategies'?)"
    proc = run_cli("plugins", env=env)
    assert proc.returncode == 0
    assert proc.stderr == f"lusbench: warning: {message}; it is never called\n"
    assert "unknown hook 'register_strategies'" in proc.stdout  # the status column, instead of "ok"

    strict = run_cli("plugins", env={**env, "LUSBENCH_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert strict.stderr == f"lusbench plugins: error: {message}\n"


@pytest.mark.parametrize(("args", "allow"), [(["-p", "no:label-strategies"], "none"),
                                             ([], "none,no:label-strategies")])
def test_a_builtin_can_be_switched_off(args, allow):
    proc = run_cli(*args, "plugins", "--json", env={"LUSBENCH_PLUGINS": allow})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["label_strategies"] == []
    assert "label-strategies" not in [p["name"] for p in doc["plugins"]]
    assert "unet" in [e["name"] for e in doc["models"]]  # only the one named is off
    proc = run_cli(*args, "run", "--strategy", "threshold:0.5", env={"LUSBENCH_PLUGINS": allow})
    assert proc.returncode == 2
    assert proc.stderr == "lusbench run: error: --strategy 'threshold:0.5': unknown name 'threshold' (known: none)\n"


def test_a_switched_off_plugin_is_not_even_imported(plugin_site):
    env = plugin_site("lusbench-broken", {"broken": "broken_plugin"}, {"broken_plugin": "raise RuntimeError('boom')\n"})
    proc = run_cli("-p", "no:broken", "plugins", "--json", env={**env, "LUSBENCH_STRICT_PLUGINS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "broken" not in [p["name"] for p in json.loads(proc.stdout)["plugins"]]


def test_switching_off_a_name_no_plugin_has_is_a_warning():
    proc = run_cli("-p", "no:label-strategy", "plugins", "--json")
    assert proc.returncode == 0
    assert proc.stderr.startswith("lusbench: warning: -p no:label-strategy: no plugin is named 'label-strategy' (names: ")
    assert "threshold" in [e["name"] for e in json.loads(proc.stdout)["label_strategies"]]


def test_an_installed_outside_plugin_does_not_leak_into_tests_that_did_not_ask_for_it(tmp_path, monkeypatch):
    leak = GOOD.replace('register("half"', 'register("leaked"')
    site = write_distribution(tmp_path / "site", "lusbench-leak", {"leak": "leak_plugin"}, {"leak_plugin": leak})
    env = {"PYTHONPATH": str(site)}  # installed, as if in the developer's venv, but not asked for
    listed = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert "leaked" not in [e["name"] for e in listed["label_strategies"]]
    monkeypatch.syspath_prepend(str(site))
    assert "leaked" not in load_plugins().strategies.names()
    # The control: without the tests' default, the same installation is found, in a subprocess and in-process.
    monkeypatch.delenv("LUSBENCH_PLUGINS")
    listed = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert "leaked" in [e["name"] for e in listed["label_strategies"]]
    assert "leaked" in load_plugins().strategies.names()


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
