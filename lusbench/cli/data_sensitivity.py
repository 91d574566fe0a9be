"""``lusbench data sensitivity SPEC``: can the dataset's downstream tasks tell a better segmentation from a worse one?

Degrades the dataset's reference masks to controlled Dice levels and runs every registered downstream task on
each level (``lusbench.evaluate.sensitivity``); prints a table, and optionally writes the numbers (``--json``)
and a plot of each task's headline metric with its interval against Dice (``--out``). Documented in
docs/cli/data.md. numpy, scikit-learn and matplotlib are imported inside the handler.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lusbench.errors import UserError

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset


def add_parser(actions: argparse._SubParsersAction, load_dataset: Callable[[argparse.Namespace], LUSDataset]) -> None:
    """Add ``sensitivity`` to the subcommands of ``lusbench data``; ``load_dataset(args)`` builds and checks
    ``args.spec`` (``lusbench data``'s loader, passed in so that this module does not import its parent)."""
    from lusbench.evaluate.sensitivity import DEFAULT_LEVELS, DICE_TOLERANCE

    p = actions.add_parser("sensitivity", help="run the downstream tasks on reference masks degraded to set Dice levels",
                           description="Degrade the reference masks (true masks, else expert labels binarized at 0.5) "
                                       "by missed findings, false-positive findings and boundary errors to each Dice "
                                       "level, run every downstream task on each level with its cross-validation, and "
                                       "print each metric with its 95%% patient-bootstrap interval.")
    p.add_argument("spec", metavar="DATASET_SPEC", help="dataset spec, e.g. synthetic-lus")
    p.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS), metavar="DICE",
                   help=f"Dice levels in (0, 1] (default {' '.join(f'{v:g}' for v in DEFAULT_LEVELS)})")
    p.add_argument("--tolerance", type=float, default=DICE_TOLERANCE, metavar="D",
                   help=f"largest distance between a level and the achieved Dice (default {DICE_TOLERANCE:g})")
    p.add_argument("--task", dest="tasks", action="append", metavar="SPEC",
                   help="downstream task spec (repeatable; default: every registered task)")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradation and of the tasks' splits (default 0)")
    p.add_argument("--out", type=Path, metavar="PNG", help="write the plot of each task's headline metric against Dice")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every number (levels, Dice, metrics, intervals)")
    p.set_defaults(func=run_sensitivity_command, load_dataset=load_dataset)


def run_sensitivity_command(args: argparse.Namespace) -> int:
    """Handler of ``lusbench data sensitivity``."""
    from lusbench.fileio import atomic_write_text

    levels = list(args.levels)
    bad = [v for v in levels if not 0.0 < v <= 1.0]
    if bad:
        raise UserError(f"--levels: {bad[0]:g} is not a Dice level in (0, 1]")
    if len(set(levels)) != len(levels):
        raise UserError("--levels: a level is given twice")
    if not 0.0 < args.tolerance < 0.5:
        raise UserError(f"--tolerance {args.tolerance:g}: must be between 0 and 0.5")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be 0 or more")
    for path in (args.out, args.json):
        if path is not None and not path.parent.is_dir():
            raise UserError(f"{path}: directory {path.parent} does not exist")
    dataset = args.load_dataset(args)

    from lusbench.api.plugins import load_plugins
    from lusbench.evaluate.sensitivity import DegradationError, run_sensitivity, table_lines, write_sensitivity_png

    registry = load_plugins(args.plugins).tasks
    tasks = [registry.create(spec, "--task") for spec in (args.tasks or registry.names())]
    try:
        doc = run_sensitivity(dataset, tasks, levels, seed=args.seed, tolerance=args.tolerance)
    except DegradationError as exc:
        raise UserError(f"dataset '{args.spec}': {exc}") from None
    if not doc["tasks"]:
        raise UserError(f"dataset '{args.spec}': no downstream task can run on it ("
                        + "; ".join(f"{name}: {why}" for name, why in doc["skipped"].items()) + ")")
    print(f"{doc['dataset']}: {doc['reference']} degraded to each Dice level (achieved Dice within "
          f"{doc['tolerance']:g}); {doc['patients']} patients; intervals: {doc['interval']}")
    for name, why in doc["skipped"].items():
        print(f"skipped {name}: {why}")
    for line in table_lines(doc, [m for names in doc["tasks"].values() for m in names]):
        print(line)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.out is not None:
        write_sensitivity_png(doc, args.out)
        print(f"wrote {args.out}")
    return 0
