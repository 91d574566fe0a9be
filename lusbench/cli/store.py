"""``lusbench store ls`` / ``lusbench store prune``: what a run directory's results store holds, and removing what
no run reads any more (records under stale keys, orphan artifacts)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lusbench.results.document import DEFAULT_RUN_DIR


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "store", help="list or prune a run directory's results store",
        description="A run directory keeps every finished unit of work under the keys it was computed with, so it "
                    "grows as data, code or settings change. `ls` shows what is live (read by the last run in the "
                    "directory), stale and orphaned, with sizes; `prune` removes all but the live. See docs/cli/store.md.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("ls", help="records and artifact sizes: live, stale, orphaned")
    ls.add_argument("--out", type=Path, default=Path(DEFAULT_RUN_DIR), metavar="DIR",
                    help=f"run directory (default: {DEFAULT_RUN_DIR})")
    ls.set_defaults(func=run_ls)
    prune = actions.add_parser("prune", help="remove stale records, their artifacts and orphan artifacts")
    prune.add_argument("--out", type=Path, default=Path(DEFAULT_RUN_DIR), metavar="DIR",
                       help=f"run directory (default: {DEFAULT_RUN_DIR})")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    prune.set_defaults(func=run_prune)


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def _open(run_dir: Path):
    from lusbench.errors import UserError
    from lusbench.results.collect import live_keys, read_manifest
    from lusbench.results.store import DB_NAME, ResultsStore

    if not (run_dir / DB_NAME).exists():
        raise UserError(f"no lusbench results store in {run_dir} (no {DB_NAME})")
    store = ResultsStore(run_dir)
    try:
        return store, live_keys(read_manifest(store))
    except BaseException:
        store.close()
        raise


def _kind(key) -> str:
    if key.task:
        return "task"
    return "trained fold" if key.eval_key == "" else "evaluation"


def run_ls(args: argparse.Namespace) -> int:
    from collections import Counter

    from rich.table import Table

    from lusbench.results.render import stdout_console
    from lusbench.results.store import usage

    store, live = _open(args.out)
    with store:
        found = usage(store, live)
    table = Table(title=f"lusbench store {args.out}", title_justify="left")
    for col in ("records", "live", "stale"):
        table.add_column(col, justify="left" if col == "records" else "right")
    live_kinds, stale_kinds = Counter(map(_kind, found.live)), Counter(map(_kind, found.stale))
    for kind in ("trained fold", "evaluation", "task"):
        table.add_row(kind + "s", str(live_kinds[kind]), str(stale_kinds[kind]))
    table.add_row("artifacts (probabilities, weights)", _size(found.live_bytes), _size(found.stale_bytes))
    console = stdout_console()
    console.print(table)
    stale_rows = Counter(k.row for k in found.stale if _kind(k) == "trained fold")
    if stale_rows:
        print("stale trained folds by row: " + ", ".join(f"{row} {n}" for row, n in stale_rows.items()))
    print(f"orphan artifact files (no record points at them): {len(found.orphans)}, {_size(found.orphan_bytes)}")
    if found.set_aside:
        print(f"records of an older lusbench (results schema 1), never reused: {found.set_aside}")
    print(f"database: {_size(found.database_bytes)}. Live: read by the last run in {args.out}; `lusbench store prune "
          f"--out {args.out}` removes the rest ({_size(found.stale_bytes + found.orphan_bytes)} of artifacts)")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from lusbench.results.store import prune, run_lock, usage

    # A run in progress writes records and artifacts that are live for it but not yet in the manifest read here.
    with run_lock(args.out, wait=False):
        store, live = _open(args.out)
        with store:
            found = usage(store, live) if args.dry_run else prune(store, live)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(found.stale)} stale records with {_size(found.stale_bytes)} of artifacts, "
          f"{len(found.orphans)} orphan artifact files ({_size(found.orphan_bytes)})"
          + (f" and {found.set_aside} schema-1 records" if found.set_aside else "")
          + f"; kept {len(found.live)} live records ({_size(found.live_bytes)})")
    return 0
