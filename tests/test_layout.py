"""The package layout: the stages' import graph has no cycles, and the project cites only its own documents."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lusbench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Every lusbench module imported anywhere in ``tree`` (function-local imports too), except under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lusbench"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lusbench") and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    graph = {}
    for file in files:
        name = _module_name(file)
        # A package's __init__ importing its own submodule for re-export is not a dependency between stages.
        graph[name] = {m for m in _imports(ast.parse(file.read_text()), modules) if m in modules and m != name
                       and not (file.name == "__init__.py" and m.startswith(name + "."))}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lusbench_imports_have_no_cycles():
    graph = import_graph()
    assert "lusbench.exec.runner" in graph and graph["lusbench.exec.runner"], "the walker found no imports"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


STAGES = ("api", "data", "train", "evaluate", "results", "exec", "cli")
# What each stage may import (besides the package's shared modules: errors, fileio, progress, __init__).
# Data flows one way: no stage reaches back to a later one.
ALLOWED = {
    "api": set(),
    "data": {"api"},
    "train": {"api", "data"},
    "evaluate": {"api", "data", "train"},
    "results": {"api", "data", "train", "evaluate"},
    "exec": {"api", "data", "train", "evaluate", "results"},
    "cli": {"api", "data", "train", "evaluate", "results", "exec"},
}


def test_stages_import_only_earlier_stages():
    bad = []
    for module, deps in import_graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in STAGES:
            continue
        for dep in deps:
            dep_stage = dep.split(".")[1] if dep.count(".") >= 1 else ""
            if dep_stage in STAGES and dep_stage != parts[1] and dep_stage not in ALLOWED[parts[1]]:
                bad.append(f"{module} imports {dep}")
    assert not bad, bad


def test_project_files_cite_only_project_documents():
    pattern = re.compile(r"DESIGN(\.md)?\s*§|DESIGN\.md")
    hits = []
    for path in [*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md"), *PACKAGE.rglob("*.py"), *(ROOT / "plugins").rglob("*.py"),
                 *(ROOT / "tests").rglob("*.py")]:
        if path == Path(__file__).resolve():
            continue
        lines = enumerate(path.read_text().splitlines(), 1)
        hits += [f"{path.relative_to(ROOT)}:{i}" for i, line in lines if pattern.search(line)]
    assert not hits, hits
