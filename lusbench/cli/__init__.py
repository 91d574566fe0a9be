"""The ``lusbench`` command line: :mod:`lusbench.cli.main` builds the parser; one module per subcommand,
each with ``add_parser(subparsers)`` wiring ``func(args) -> exit code``."""

from lusbench.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
