"""``lusbench run``: placeholder until implemented."""

from __future__ import annotations

import argparse

from lusbench.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="(not yet implemented)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise UserError("'run' is not implemented yet")
