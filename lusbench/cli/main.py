"""The ``lusbench`` command line. Each subcommand lives in ``lusbench/cli/<name>.py``.

The parser is built from light modules only: ``lusbench --help`` and ``lusbench plugins`` never
import torch. User errors become one line on stderr and exit code 2; a bug is one line and exit code 4,
with the traceback written to a file (docs/cli.md).
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from lusbench import __version__
from lusbench.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, UserError, exception_summary

COMMANDS = ("run", "leaderboard", "check", "report", "plugins", "data", "strategies", "store")


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
        help="import MODULE as a plugin for this command; -p no:NAME switches off plugin NAME, built-in or "
             "installed (repeatable)",
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
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: exit 4, never 1 (1 means "regression")
        where = write_traceback(exc)
        print(f"lusbench {args.command}: internal error: {exception_summary(exc)} "
              f"(a bug in lusbench or a plugin; traceback written to {where})", file=sys.stderr)
        return EXIT_INTERNAL


def write_traceback(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a new file in the temporary directory and return its path.

    ``LUSBENCH_TRACEBACK_DIR`` chooses another directory (CI can point it at an uploaded artifact folder).
    """
    import os
    import tempfile
    import time
    import traceback

    folder = os.environ.get("LUSBENCH_TRACEBACK_DIR") or tempfile.gettempdir()
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(dir=folder, prefix=f"lusbench-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"lusbench {__version__}, argv: {sys.argv}\n{text}")
    except OSError:
        # Nowhere to write it: the traceback goes to stderr after all, rather than being lost.
        print(text, file=sys.stderr, end="")
        return "stderr (above)"
    return path


if __name__ == "__main__":
    sys.exit(main())
