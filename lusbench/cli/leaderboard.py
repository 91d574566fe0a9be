"""``lusbench leaderboard``: show a finished run's leaderboard, rebuilt from its results store without retraining."""

from __future__ import annotations

import argparse

# These modules import only the standard library at module level: the CLI stays instant.
from lusbench.results.document import DEFAULT_RUN_DIR
from lusbench.results.render import FORMATS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard", help="show the leaderboard of a finished run",
        description="Print a run's leaderboard: mean, 95% CI and n of every metric, paired comparisons with the "
                    "reference strategy (▲/▼), ranks. See docs/cli/leaderboard.md.",
    )
    p.add_argument("--out", default=DEFAULT_RUN_DIR, metavar="DIR", help="run directory (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: %(default)s)")
    p.add_argument("--reference", metavar="SPEC", help="strategy the others are compared with (default: the run's)")
    p.add_argument("--primary-metric", metavar="NAME", help="the metric shown first and ranked by (default: the run's)")
    p.add_argument("--folds", action="store_true",
                   help="show how every fold trained instead: best epoch, epochs run, why it stopped, degenerate classes")
    p.add_argument("--metrics", metavar="LIST",
                   help="comma-separated metric columns for table/markdown/csv, or 'all' (default: main metrics)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lusbench.results.leaderboard import load_run_leaderboard
    from lusbench.results.render import render, select_columns, stdout_console, table_renderable

    doc = load_run_leaderboard(args.out, args.reference, args.primary_metric)
    if args.folds:
        from lusbench.results.render import folds_table

        stdout_console().print(folds_table(doc))
        return 0
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    select_columns(doc, metrics)  # unknown metric names fail here, before any output
    if args.format == "table":
        console = stdout_console()
        console.print(table_renderable(doc, metrics, console.width))
    elif args.format == "html":
        from lusbench.results.report import render_html

        print(render_html(doc), end="")
    else:
        print(render(doc, args.format, metrics), end="")
    return 0
