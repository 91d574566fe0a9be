"""``lusbench check``: fail (exit 1) when a fresh leaderboard regressed against a committed baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lusbench.results.check import NOISE_MULTIPLE
from lusbench.results.document import DEFAULT_RUN_DIR, LEADERBOARD_FILE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="compare a leaderboard with a baseline (for CI)",
        description="Compare a fresh leaderboard JSON with a committed baseline, metric by metric, with absolute "
                    "tolerances in each metric's direction. Exit 0 ok, 1 regression, 3 cannot compare "
                    "(baseline missing or from another configuration). See docs/cli/check.md.",
    )
    p.add_argument("--baseline", required=True, metavar="FILE", help="the committed baseline leaderboard JSON")
    p.add_argument("--json", default=f"{DEFAULT_RUN_DIR}/{LEADERBOARD_FILE}", metavar="FILE",
                   help="the fresh leaderboard (default: %(default)s)")
    p.add_argument("--update-baseline", action="store_true",
                   help="rewrite the baseline from the fresh leaderboard (keeps its tolerances); exit 0")
    p.add_argument("--noise-tolerances", nargs="?", type=float, const=NOISE_MULTIPLE, metavar="K",
                   help="with --update-baseline: also store tolerances derived from this run's spread, K standard "
                        "errors of each metric (default K: %(const)g); see docs/cli/check.md")
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=ABS",
                   help="absolute tolerance for METRIC (a name or glob such as 'dice.*'); repeatable")
    p.set_defaults(func=run)


def _print_lines(lines: list) -> None:
    from rich.table import Table

    from lusbench.results.check import VERDICT_IMPROVED, VERDICT_OK
    from lusbench.results.render import fmt_value, stdout_console

    table = Table(title="lusbench check", title_justify="left")
    for col in ("row", "metric", "old", "new", "delta", "tolerance", "verdict"):
        table.add_column(col, justify="left" if col in ("row", "metric", "verdict") else "right")
    for ln in lines:
        delta = "—" if ln.delta is None else f"{'+' if ln.delta >= 0 else ''}{fmt_value(ln.delta)}"
        style = {VERDICT_IMPROVED: "green", VERDICT_OK: ""}.get(ln.verdict, "bold red" if ln.failed else "dim")
        arrow = "↑" if ln.higher_is_better else "↓"
        table.add_row(ln.row, f"{ln.metric} {arrow}", fmt_value(ln.old), fmt_value(ln.new), delta, f"{ln.tolerance:g}",
                      f"[{style}]{ln.verdict}[/]" if style else ln.verdict)
    stdout_console().print(table)


def run(args: argparse.Namespace) -> int:
    from lusbench.errors import CannotCompareError, UserError
    from lusbench.results import check
    from lusbench.results.document import read_leaderboard, require_valid, write_leaderboard

    overrides = check.parse_tolerances(args.tolerance)
    if args.noise_tolerances is not None and not (args.update_baseline and args.noise_tolerances > 0):
        raise UserError("--noise-tolerances K needs --update-baseline and a positive K")
    current = read_leaderboard(args.json)
    try:
        require_valid(current, args.json)
    except UserError as exc:
        raise CannotCompareError(str(exc)) from None
    baseline_path = Path(args.baseline)
    baseline = None
    if baseline_path.exists():
        try:
            baseline = read_leaderboard(baseline_path)
            require_valid(baseline, baseline_path)
        except UserError as exc:
            if not args.update_baseline:
                raise CannotCompareError(f"baseline unusable: {exc}") from None
            baseline = None
    elif not args.update_baseline:
        raise CannotCompareError(f"baseline {baseline_path} does not exist; create it with --update-baseline")

    lines = None
    if baseline is not None:
        try:
            lines = check.compare(baseline, current, overrides)
        except CannotCompareError as exc:
            if not args.update_baseline:
                raise
            print(f"previous baseline not comparable ({exc}); replacing it", file=sys.stderr)
    if lines is not None:
        _print_lines(lines)
        for diff in check.environment_differences(baseline, current):
            print(f"note: environment differs from the baseline's: {diff}")
        for strategy in check.uncompared_rows(baseline, current):
            print(f"note: {strategy} is not in the baseline, so it is not checked (add it with --update-baseline)")
        print(check.summary(lines))
    if args.update_baseline:
        # A new baseline may start a new directory (e.g. benchmarks/baselines/): creating it is the intent.
        Path(baseline_path).parent.mkdir(parents=True, exist_ok=True)
        write_leaderboard(check.updated_baseline(current, baseline, args.noise_tolerances), baseline_path)
        for strategy in check.uncompared_rows(current, baseline) if baseline is not None else []:
            print(f"warning: {strategy} was in the old baseline but not in {args.json}: the new baseline no longer "
                  "guards it", file=sys.stderr)
        print(f"baseline {baseline_path} {'updated' if baseline is not None else 'created'} from {args.json}")
        return 0
    return 1 if any(ln.failed for ln in lines) else 0
