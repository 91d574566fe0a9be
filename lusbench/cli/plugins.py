"""``lusbench plugins``: list every registered name and the plugin that registered it; ``--expand SPEC`` shows the
strategies a sweep spec stands for."""

from __future__ import annotations

import argparse
import json

from lusbench.api.plugins import Plugins, load_plugins
from lusbench.api.registry import FLAGS, KINDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list plugins and the names they register",
                       description="List loaded plugins and every registered strategy, dataset, model and task.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--expand", action="append", metavar="SPEC", default=[],
                   help="instead of the lists, show the strategies the --strategy SPEC stands for, its sweeps A..B/STEP "
                        "written out (repeatable)")
    p.set_defaults(func=run)


def expand(plugins: Plugins, specs: list[str]) -> list[dict[str, object]]:
    """Each spec with the canonical names of the strategies it expands to (a bad spec is a one-line UserError)."""
    return [{"spec": text, "strategies": [plugins.strategies.create(spec, label).name
                                          for spec, label in plugins.strategies.expand(text, "--expand")]}
            for text in specs]


def run(args: argparse.Namespace) -> int:
    # diagnose: a name taken by two plugins is shown (the later plugin failed), not fatal, so this command
    # is how the user finds out which plugin to uninstall or skip.
    plugins = load_plugins(args.plugins, diagnose=True)
    if args.expand:
        expansions = expand(plugins, args.expand)
        if args.json:
            print(json.dumps({"expansions": expansions}, indent=2))
        for item in [] if args.json else expansions:
            names = item["strategies"]
            print(f"{item['spec']} -> {len(names)} strateg{'y' if len(names) == 1 else 'ies'}: {', '.join(names)}")
        return 0
    doc = {
        "plugins": [
            {"name": i.name, "module": i.module, "source": i.source, "error": i.error} for i in plugins.loaded
        ],
        **{
            kind: [{"name": e.name, "plugin": e.plugin, "summary": e.summary} for e in plugins.registries[kind].entries()]
            for kind in KINDS
        },
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from lusbench.results.render import stdout_console

    console = stdout_console()
    table = Table(title="lusbench plugins", title_justify="left")
    for col in ("kind", "name", "plugin", "description"):
        table.add_column(col)
    for kind in KINDS:
        for entry in doc[kind]:
            table.add_row(f"{kind.replace('_', ' ')} ({FLAGS[kind]})", entry["name"], entry["plugin"], entry["summary"])
    console.print(table)
    loaded = Table(title="plugins", title_justify="left")
    for col in ("plugin", "module", "source", "status"):
        loaded.add_column(col)
    for info in plugins.loaded:
        # escape: a plugin's message may contain [brackets] that rich would take for markup.
        status = (f"[red]{escape(info.error)}[/red]" if info.error
                  else f"[yellow]ok; {escape(info.warning)}[/yellow]" if info.warning else "ok")
        loaded.add_row(info.name, info.module, info.source, status)
    console.print(loaded)
    return 0
