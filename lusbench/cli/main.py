"""The ``lusbench`` command line. Each subcommand lives in ``lusbench/cli/<name>.py``.

The parser is built from light modules only: ``lusbench --help`` and ``lusbench plugins`` never
import torch. User errors become one line on stderr and exit code 2 (docs/cli.md).
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from lusbench import __version__
from lusbench.errors import EXIT_USAGE, UserError

COMMANDS = ("run", "leaderboard", "check", "report", "plugins", "data")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lusbench",
        description="Benchmark uncertainty-aware label strategies for lung-ultrasound segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"lusbench {__version__}")
    parser.add_argument(
        "-p", "--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
        help="import MODULE as a plugin for this command (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        import_module(f"lusbench.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"lusbench {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A path the user gave cannot be read or written (missing directory, read-only, not a directory).
        where = f": {exc.filename}" if exc.filename else ""
        print(f"lusbench {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"lusbench {args.command}: interrupted; finished results are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
