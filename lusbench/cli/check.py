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
                   help="absolute tolerance for METRIC (a name or glob such as 'dice.*' that must match a metric); "
                        "repeatable")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="list every compared metric, not only those that failed or changed beyond tolerance")
    p.set_defaults(func=run)


def _print_result(result, verbose: bool, title: str) -> None:
    from rich.table import Table

    from lusbench.results.check import VERDICT_IMPROVED, VERDICT_OK
    from lusbench.results.render import fmt_value, stdout_console

    shown = result.beyond_tolerance()
    if verbose:
        shown += [ln for ln in result.lines if ln not in shown]
    console = stdout_console()
    for strategy in result.missing:
        console.print(f"[bold red]MISSING[/] {strategy}: in the baseline, not in the fresh leaderboard "
                      f"({result.missing_metrics // len(result.missing)} metrics unchecked)", highlight=False)
    if shown:
        # "baseline" and "fresh" name the sides; the difference is always fresh minus baseline.
        table = Table(title=title, title_justify="left")
        for col in ("strategy", "metric", "baseline", "fresh", "fresh − baseline", "tolerance", "tolerance from", "verdict"):
            table.add_column(col, justify="left" if col in ("strategy", "metric", "tolerance from", "verdict") else "right")
        for ln in shown:
            delta = "—" if ln.delta is None else f"{'+' if ln.delta >= 0 else ''}{fmt_value(ln.delta)}"
            style = {VERDICT_IMPROVED: "green", VERDICT_OK: ""}.get(ln.verdict, "bold red" if ln.failed else "dim")
            arrow = "↑" if ln.higher_is_better else "↓"
            table.add_row(ln.row, f"{ln.metric} {arrow}", fmt_value(ln.old), fmt_value(ln.new), delta,
                          f"{ln.tolerance:g}", ln.tolerance_source, f"[{style}]{ln.verdict}[/]" if style else ln.verdict)
        console.print(table)
    hidden = len(result.lines) - len(shown)
    if hidden:
        print(f"{hidden} metrics within tolerance not listed (--verbose lists every metric)")


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
    check.check_tolerance_names(overrides, current, *([baseline] if baseline is not None else []))

    result = None
    if baseline is not None:
        try:
            result = check.compare(baseline, current, overrides)
        except CannotCompareError as exc:
            if not args.update_baseline:
                raise
            print(f"previous baseline not comparable ({exc}); replacing it", file=sys.stderr)
    if result is not None:
        title = (f"lusbench check: {args.json} (fresh) against {baseline_path} (baseline)" if not args.update_baseline
                 else f"lusbench check --update-baseline: {args.json} (fresh) replaces {baseline_path} (baseline)")
        _print_result(result, args.verbose, title)
        for diff in check.environment_differences(baseline, current):
            print(f"note: environment differs from the baseline's (baseline != fresh): {diff}")
        for strategy in check.uncompared_rows(baseline, current):
            print(f"note: {strategy} is not in the baseline, so it is not checked (add it with --update-baseline)")
        # Updating is not a verdict: say what the new baseline accepts instead of "check FAILED".
        print(check.update_summary(result) if args.update_baseline else check.summary(result))
    if args.update_baseline:
        # A new baseline may start a new directory (e.g. benchmarks/baselines/): creating it is the intent.
        Path(baseline_path).parent.mkdir(parents=True, exist_ok=True)
        write_leaderboard(check.updated_baseline(current, baseline, args.noise_tolerances), baseline_path)
        for strategy in check.uncompared_rows(current, baseline) if baseline is not None else []:
            print(f"warning: {strategy} was in the old baseline but not in {args.json}: the new baseline no longer "
                  "guards it", file=sys.stderr)
        print(f"baseline {baseline_path} {'updated' if baseline is not None else 'created'} from {args.json}")
        return 0
    return 1 if result.failed else 0
