"""Hooks are called through pluggy itself: wrappers and tryfirst work, a failing plugin leaves nothing behind,
and ``run_failed`` closes what ``run_started`` opened. Plugins are real modules loaded with ``-p``."""

import re
import sys
import textwrap

import pytest

from lusbench.api.plugins import load_plugins
from lusbench.errors import PluginError


@pytest.fixture
def module_plugin(tmp_path, monkeypatch):
    """Returns ``write(stem, source) -> module name``: a plugin module importable for this test only."""
    monkeypatch.syspath_prepend(str(tmp_path))
    # Unique per test: a module stays in sys.modules, and another test's module of the same name must not be found.
    suffix = re.sub(r"\W", "_", tmp_path.name)
    written: list[str] = []

    def write(stem: str, source: str) -> str:
        name = f"{stem}_{suffix}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_wrapper_event_hooks_run_around_the_others(module_plugin, tmp_path):
    logger = module_plugin("logger", '''
        import lusbench

        @lusbench.hookimpl
        def run_started(config, run_dir):
            config["calls"].append("impl")
    ''')
    wrappers = module_plugin("wrappers", '''
        import lusbench

        @lusbench.hookimpl(wrapper=True)
        def run_started(config, run_dir):
            config["calls"].append("wrapper before")
            try:
                return (yield)
            finally:
                config["calls"].append("wrapper after")

        @lusbench.hookimpl(hookwrapper=True)
        def run_finished(leaderboard, run_dir):
            leaderboard["calls"].append("old-style wrapper before")
            yield
            leaderboard["calls"].append("old-style wrapper after")
    ''')
    plugins = load_plugins([logger, wrappers])
    config = {"calls": []}
    plugins.notify("run_started", config=config, run_dir=tmp_path)
    assert config["calls"] == ["wrapper before", "impl", "wrapper after"]
    leaderboard = {"calls": []}
    plugins.notify("run_finished", leaderboard=leaderboard, run_dir=tmp_path)
    assert leaderboard["calls"] == ["old-style wrapper before", "old-style wrapper after"]


def test_tryfirst_is_honoured(module_plugin, tmp_path):
    first = module_plugin("first", '''
        import lusbench

        @lusbench.hookimpl(tryfirst=True)
        def run_started(config, run_dir):
            config["calls"].append("first(tryfirst)")
    ''')
    second = module_plugin("second", '''
        import lusbench

        @lusbench.hookimpl
        def run_started(config, run_dir):
            config["calls"].append("second")
    ''')
    # Registered last, `second` would be called first (pluggy is LIFO) were tryfirst ignored.
    plugins = load_plugins([first, second])
    config = {"calls": []}
    plugins.notify("run_started", config=config, run_dir=tmp_path)
    assert config["calls"] == ["first(tryfirst)", "second"]


def test_event_failure_names_the_plugin_that_raised_not_the_wrapper_around_it(module_plugin, tmp_path):
    wrapper = module_plugin("wrapper", '''
        import lusbench

        @lusbench.hookimpl(wrapper=True)
        def run_started(config, run_dir):
            return (yield)
    ''')
    tracker = module_plugin("tracker", '''
        import lusbench

        def connect():
            raise ConnectionError("tracker down")

        @lusbench.hookimpl
        def run_started(config, run_dir):
            connect()
    ''')
    plugins = load_plugins([tracker, wrapper])
    with pytest.raises(PluginError) as caught:
        plugins.notify("run_started", config={}, run_dir=tmp_path)
    assert str(caught.value) == f"plugin '{tracker}' failed in run_started: ConnectionError: tracker down"


def test_registration_hooks_are_called_through_pluggy(module_plugin):
    # A wrapper is a generator function: called directly instead of through pluggy, its body never runs.
    wrapped = module_plugin("wrapped", '''
        import lusbench
        from lusbench.train.strategy import LabelStrategy

        class Wrapped(LabelStrategy):
            name = "wrapped"
            def targets(self, confidence):
                return confidence, None

        @lusbench.hookimpl(wrapper=True)
        def register_label_strategies(register):
            register("wrapped", Wrapped)
            return (yield)
    ''')
    plugins = load_plugins([wrapped])
    assert plugins.strategies.create("wrapped").name == "wrapped"
    assert next(e.plugin for e in plugins.strategies.entries() if e.name == "wrapped") == wrapped


def test_a_plugin_whose_registration_hook_raised_is_unregistered_with_all_its_names(module_plugin, tmp_path):
    half = module_plugin("half", '''
        import lusbench
        from lusbench.train.strategy import LabelStrategy

        class Half(LabelStrategy):
            name = "half"
            def targets(self, confidence):
                return confidence * 0.5, None

        @lusbench.hookimpl
        def register_label_strategies(register):
            register("half", Half)

        @lusbench.hookimpl
        def register_datasets(register):
            register("half-data", lambda: None)

        @lusbench.hookimpl
        def register_downstream_tasks(register):
            raise RuntimeError("late")

        @lusbench.hookimpl
        def run_started(config, run_dir):
            config["calls"].append("half run_started")
    ''')
    warnings: list[str] = []
    plugins = load_plugins([half], warn=warnings.append)
    assert warnings == [f"lusbench: warning: plugin '{half}' failed in register_downstream_tasks: RuntimeError: late; skipped"]
    assert "half" not in plugins.strategies.names()
    assert "half-data" not in plugins.datasets.names()
    assert "threshold" in plugins.strategies.names()  # the other plugins keep working
    assert not plugins.manager.has_plugin(half)
    info = next(i for i in plugins.loaded if i.name == half)
    assert info.error == f"plugin '{half}' failed in register_downstream_tasks: RuntimeError: late"
    config = {"calls": []}
    plugins.notify("run_started", config=config, run_dir=tmp_path)
    assert config["calls"] == []


def test_a_plugin_registering_an_invalid_name_is_unregistered(module_plugin):
    bad = module_plugin("bad", '''
        import lusbench

        @lusbench.hookimpl
        def register_models(register):
            register("fine", lambda: None)
            register("not:valid", lambda: None)
    ''')
    warnings: list[str] = []
    plugins = load_plugins([bad], warn=warnings.append)
    assert warnings == [f"lusbench: warning: plugin '{bad}' registered an invalid models name 'not:valid'; skipped"]
    assert "fine" not in plugins.models.names()
    assert not plugins.manager.has_plugin(bad)


RECORDER = '''
    import lusbench

    @lusbench.hookimpl
    def run_failed(config, run_dir, error):
        config["calls"].append(("run_failed", str(run_dir), error))
'''


def test_run_failed_fires_once_for_a_started_run_with_the_error_summary(module_plugin, tmp_path):
    recorder = module_plugin("recorder", RECORDER)
    plugins = load_plugins([recorder])
    config = {"calls": []}
    plugins.notify_run_failed(ValueError("before the start"))  # nothing was started: nothing to close
    assert config["calls"] == []
    plugins.notify("run_started", config=config, run_dir=tmp_path)
    plugins.notify_run_failed(RuntimeError("fold 3 failed\nsecond line of the message"))
    plugins.notify_run_failed(KeyError("again"))  # a run fails once
    assert config["calls"] == [("run_failed", str(tmp_path), "RuntimeError: fold 3 failed")]

    finished = {"calls": []}
    plugins.notify("run_started", config=finished, run_dir=tmp_path)
    plugins.notify("run_finished", leaderboard={}, run_dir=tmp_path)
    plugins.notify_run_failed(RuntimeError("after the end"))  # a finished run does not fail afterwards
    assert finished["calls"] == []


def test_run_failed_fires_when_another_plugins_run_started_raised(module_plugin, tmp_path):
    recorder = module_plugin("recorder", RECORDER)
    failing = module_plugin("failing", '''
        import lusbench

        @lusbench.hookimpl
        def run_started(config, run_dir):
            raise ConnectionError("tracker down")
    ''')
    plugins = load_plugins([recorder, failing])
    config = {"calls": []}
    with pytest.raises(PluginError) as caught:
        plugins.notify("run_started", config=config, run_dir=tmp_path)
    plugins.notify_run_failed(caught.value)
    assert config["calls"] == [("run_failed", str(tmp_path), f"PluginError: plugin '{failing}' failed in run_started: "
                                                            "ConnectionError: tracker down")]


def test_a_failing_run_failed_hook_is_a_warning_not_the_runs_error(module_plugin, tmp_path):
    broken = module_plugin("broken", '''
        import lusbench

        @lusbench.hookimpl
        def run_failed(config, run_dir, error):
            raise OSError("cannot close")
    ''')
    warnings: list[str] = []
    plugins = load_plugins([broken], warn=warnings.append)
    plugins.notify("run_started", config={}, run_dir=tmp_path)
    plugins.notify_run_failed(RuntimeError("the real error"))
    assert warnings == [f"lusbench: warning: plugin '{broken}' failed in run_failed: OSError: cannot close"]


def test_misspelled_hook_in_a_dash_p_module_is_a_warning(module_plugin):
    typo = module_plugin("typo", '''
        import lusbench

        @lusbench.hookimpl
        def run_finishd(leaderboard, run_dir):
            pass
    ''')
    warnings: list[str] = []
    plugins = load_plugins([typo], warn=warnings.append)
    message = f"plugin '{typo}' implements unknown hook 'run_finishd' (did you mean 'run_finished'?)"
    assert warnings == [f"lusbench: warning: {message}; it is never called"]
    assert next(i for i in plugins.loaded if i.name == typo).warning == message


def test_builtins_can_be_switched_off_in_process(monkeypatch):
    plugins = load_plugins(["no:smp-models"])
    assert plugins.models.names() == []
    assert "smp-models" not in [i.name for i in plugins.loaded]
    assert "threshold" in plugins.strategies.names()
    monkeypatch.setenv("LUSBENCH_PLUGINS", "none,no:label-strategies")
    plugins = load_plugins()
    assert plugins.strategies.names() == []
    assert "unet" in plugins.models.names()

