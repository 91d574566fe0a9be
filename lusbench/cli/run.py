"""``lusbench run``: train and evaluate label strategies, print and write the leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path

from lusbench.errors import UserError
from lusbench.exec.presets import PRESETS
from lusbench.results.document import DEFAULT_RUN_DIR


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="train and evaluate label strategies, print the leaderboard",
        description="Train every --strategy on the dataset with patient-grouped cross-fitting, evaluate the "
        "out-of-fold predictions and the downstream tasks, and print the leaderboard. Finished work is kept "
        "in --out, so a rerun resumes and only trains what is missing. Flags override the --preset.",
    )
    p.add_argument("--strategy", "-s", action="append", required=True, metavar="SPEC",
                   help="label strategy spec, e.g. threshold:0.6, soft, weighted (repeatable)")
    p.add_argument("--dataset", metavar="SPEC",
                   help="dataset spec; replaces the preset's whole spec, size included (default: the preset's)")
    p.add_argument("--model", metavar="SPEC", help="model spec, e.g. unet:resnet18 (default: the preset's)")
    p.add_argument("--task", action="append", metavar="NAME", help="downstream task (repeatable; default: all registered)")
    p.add_argument("--no-tasks", action="store_true", help="skip the downstream tasks")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="run size: " + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()) + " (default: default)")
    p.add_argument("--seeds", type=_positive_int, metavar="N", help="number of seeds, 0..N-1 (default: the preset's)")
    p.add_argument("--folds", type=_positive_int, metavar="K", help="cross-fitting folds (default: the preset's)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="training epochs per fold (default: the preset's)")
    p.add_argument("--eval-threshold", type=float, metavar="T", help="confidence at which labels are binarized (default 0.5)")
    p.add_argument("--reference", metavar="SPEC", default="threshold:0.5",
                   help="strategy every row is compared with, paired (default: threshold:0.5); 'none' to skip")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default: auto)")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_RUN_DIR), metavar="DIR",
                   help=f"run directory: results store, artifacts, leaderboard.json (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the leaderboard JSON to FILE")
    p.add_argument("--force", action="store_true", help="retrain everything instead of reusing finished folds")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def run(args: argparse.Namespace) -> int:
    from lusbench.api.plugins import load_plugins
    from lusbench.exec.runner import RunPlan
    from lusbench.exec.runner import run as run_plan
    from lusbench.progress import Progress

    # Checked now, not after training; the run directory itself is created by the run.
    if args.json is not None and not (args.json.parent.is_dir() or args.json.parent.resolve() == args.out.resolve()):
        raise UserError(f"--json {args.json}: directory {args.json.parent} does not exist")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: not a directory")
    preset = PRESETS[args.preset]
    plugins = load_plugins(args.plugins)
    train = dict(preset.train)
    if args.epochs is not None:
        train["epochs"] = args.epochs
    plan = RunPlan(
        strategies=args.strategy,
        dataset=args.dataset or preset.dataset,
        model=args.model or preset.model,
        tasks=[] if args.no_tasks else args.task,
        preset=preset.name,
        seeds=list(range(args.seeds or preset.seeds)),
        folds=args.folds or preset.folds,
        train=train,
        val_fraction=preset.val_fraction,
        eval_threshold=args.eval_threshold if args.eval_threshold is not None else preset.eval_threshold,
        device=args.device,
        run_dir=args.out,
        reference=None if args.reference.lower() == "none" else args.reference,
        force=args.force,
    )
    doc = run_plan(plan, plugins, Progress(quiet=args.quiet))

    from lusbench.results.document import write_leaderboard
    from lusbench.results.render import stdout_console, table_renderable

    if args.json:
        write_leaderboard(doc, args.json)
    stdout_console().print(table_renderable(doc))
    return 0
