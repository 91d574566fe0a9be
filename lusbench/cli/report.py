"""``lusbench report``: write a run's self-contained HTML report (plots embedded)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lusbench.results.document import DEFAULT_RUN_DIR


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a self-contained HTML report with plots",
        description="Write one HTML file (no external assets) with the metric-vs-threshold figure, per-class Dice, "
                    "a reliability diagram, the downstream tasks, the sensitivity curve of `lusbench data "
                    "sensitivity` when given one, and every table. See docs/cli/report.md.",
    )
    p.add_argument("--out", default=DEFAULT_RUN_DIR, metavar="DIR", help="run directory (default: %(default)s)")
    p.add_argument("--html", metavar="FILE", help="where to write the report (default: DIR/report.html)")
    p.add_argument("--reference", metavar="SPEC", help="strategy the others are compared with (default: the run's)")
    p.add_argument("--sensitivity", metavar="FILE",
                   help="JSON of `lusbench data sensitivity --json` whose curve the report shows "
                        "(default: DIR/sensitivity.json if it exists)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lusbench.results.leaderboard import load_run_leaderboard
    from lusbench.results.report import SENSITIVITY_FILE, read_sensitivity, write_report

    doc = load_run_leaderboard(args.out, args.reference)
    # Read before writing anything: a bad sensitivity file stops the command with the old report in place.
    found = Path(args.out) / SENSITIVITY_FILE
    source = Path(args.sensitivity) if args.sensitivity else found if found.exists() else None
    sensitivity = read_sensitivity(source) if source is not None else None
    path = Path(args.html) if args.html else Path(args.out) / "report.html"
    write_report(doc, path, sensitivity)
    print(f"wrote {path}" + (f" (with the sensitivity curve of {source})" if source is not None else ""))
    return 0
