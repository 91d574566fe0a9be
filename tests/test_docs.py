"""Docs stay true to the code: every hook and command documented and tested, examples identical to docs."""

import argparse
import inspect
import re
from pathlib import Path

import pytest

from lusbench.api import hookspecs
from lusbench.cli import COMMANDS, build_parser
from lusbench.exec.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "lusbench_spec")]


def test_there_are_hooks():
    assert {"register_label_strategies", "register_datasets", "register_models", "register_downstream_tasks",
            "run_started", "run_finished"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_tested(hook):
    fn = getattr(hookspecs, hook)
    assert len((fn.__doc__ or "").strip()) > 80, f"hookspec {hook} needs a docstring contract"
    assert f"### `{hook}(" in (DOCS / "hooks.md").read_text(), f"docs/hooks.md lacks a section for {hook}"
    tests = [p for p in (REPO / "tests").glob("test_*.py") if p.name != "test_docs.py"]
    assert any(re.search(rf"\bdef {hook}\(", p.read_text()) for p in tests), f"no test implements the hook {hook}"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented_flag_by_flag(command):
    page = DOCS / "cli" / f"{command}.md"
    assert page.exists(), f"docs/cli/{command}.md is missing"
    text = page.read_text()
    assert f"[`{command}`](cli/{command}.md)" in (DOCS / "cli.md").read_text()
    for action in _subparsers()[command]._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert f"`{flag}" in text, f"docs/cli/{command}.md does not document {flag}"


def test_preset_table_matches_the_code():
    text = (DOCS / "cli" / "run.md").read_text()
    for preset in PRESETS.values():
        cells = [f"`{preset.name}`", f"`{preset.dataset}`", f"`{preset.model}`", preset.seeds, preset.folds,
                 preset.train["epochs"]]
        row = "| " + " | ".join(str(c) for c in cells) + " |"
        assert row in text, f"docs/cli/run.md preset table is out of date for {preset.name}"


def test_plugin_guide_shows_the_example_plugin_verbatim():
    guide = (DOCS / "plugin-guide.md").read_text()
    source = (DOCS / "examples" / "lusbench-example-strategy" / "src" / "lusbench_ignore_band" / "__init__.py").read_text()
    assert f"```python\n{source}```" in guide


def test_readme_commands_match_ci():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_command = re.search(r"^exec (.+)$", ci, re.M).group(1)
    assert f"\n{test_command}\n" in readme


def test_doc_links_resolve():
    for page in [REPO / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"
