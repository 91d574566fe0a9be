"""``lusbench run``: train and evaluate label strategies, print and write the leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path

from lusbench.errors import UserError
from lusbench.exec.presets import PRESETS
from lusbench.results.document import DEFAULT_RUN_DIR

# One thread: a fold's numbers then do not depend on how many cores the machine has (the thread count is part of
# the training key), and on a shared machine one thread per run is steadier than threads waiting for each other
# (docs/cli/run.md, "Threads", has the measurement).
DEFAULT_THREADS = 1


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
    training = p.add_argument_group("training (each overrides the preset; all are recorded in the leaderboard's config)")
    training.add_argument("--epochs", type=_positive_int, metavar="N", help="training epochs per fold")
    training.add_argument("--lr", type=_positive_float, metavar="LR", help="peak learning rate of the one-cycle schedule")
    training.add_argument("--batch-size", type=_positive_int, metavar="N", help="training batch size")
    training.add_argument("--weight-decay", type=_non_negative_float, metavar="W", help="AdamW weight decay")
    training.add_argument("--patience", type=_patience, metavar="N|none",
                          help="early stopping after N epochs without a lower validation loss; 'none' runs every epoch "
                               "and keeps the last")
    training.add_argument("--min-epochs", type=_positive_int, metavar="N",
                          help="early stopping never stops (or selects an epoch) before N epochs, nor during the warm-up")
    training.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                          help="flips and gain/offset jitter on the training batches")
    training.add_argument("--normalize", choices=("unit", "per-image"),
                          help="input normalization: unit (pixels / 255) or per-image (zero mean, unit SD per image)")
    training.add_argument("--val-fraction", type=_val_fraction, metavar="F",
                          help="share of each fold's training patients held out for early stopping, in [0, 0.9]; "
                               "0: no validation split and no early stopping")
    p.add_argument("--eval-threshold", type=float, metavar="T", help="confidence at which labels are binarized (default 0.5)")
    p.add_argument("--primary-metric", metavar="NAME",
                   help="the metric the run is judged by (default: one no strategy trains on: true.dice with true "
                        "masks, rater.dice with raters, else soft_dice)")
    p.add_argument("--reference", metavar="SPEC", default="threshold:0.5",
                   help="strategy every row is compared with, paired (default: threshold:0.5); 'none' to skip")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default: auto)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help=f"torch intra-op CPU threads per training; part of the training key, since the thread count "
                        f"changes the trained weights (default: {DEFAULT_THREADS} with --executor local; with process:N "
                        f"the cores divided among the N workers; 1 per Dask worker)")
    p.add_argument("--executor", metavar="SPEC", default="local",
                   help="where the folds train: local (this process), process[:N] (N worker processes, default one per "
                        "core), dask (a Dask LocalCluster on 127.0.0.1), dask:tcp://HOST:PORT (a running Dask scheduler), "
                        "or a plugin's executor (default: local)")
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


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'")
    return value


def _val_fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 0.9], got '{text}'")
    return value


NO_PATIENCE = "none"


def _patience(text: str) -> int | str:
    return NO_PATIENCE if text.strip().lower() == NO_PATIENCE else _positive_int(text)


# Flag -> TrainConfig field; a flag left unset keeps the preset's value.
TRAIN_FLAGS = ("epochs", "lr", "batch_size", "weight_decay", "patience", "min_epochs", "augment", "normalize")


def train_settings(args: argparse.Namespace, preset_train: dict) -> dict:
    """The preset's training settings with every training flag the user gave applied on top."""
    train = dict(preset_train)
    for name in TRAIN_FLAGS:
        value = getattr(args, name)
        if value is not None:
            # --patience none is a value (no early stopping), distinct from an unset flag.
            train[name] = None if value == NO_PATIENCE else value
    return train


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
    train = train_settings(args, preset.train)
    plan = RunPlan(
        strategies=args.strategy,
        dataset=args.dataset or preset.dataset,
        model=args.model or preset.model,
        tasks=[] if args.no_tasks else args.task,
        preset=preset.name,
        seeds=list(range(args.seeds or preset.seeds)),
        folds=args.folds or preset.folds,
        train=train,
        val_fraction=args.val_fraction if args.val_fraction is not None else preset.val_fraction,
        eval_threshold=args.eval_threshold if args.eval_threshold is not None else preset.eval_threshold,
        device=args.device,
        run_dir=args.out,
        reference=None if args.reference.lower() == "none" else args.reference,
        force=args.force,
        primary_metric=args.primary_metric,
        # Unset: the local run's default; another executor shares the cores out among its workers itself.
        threads=args.threads if args.threads is not None or args.executor != "local" else DEFAULT_THREADS,
        executor=args.executor,
    )
    doc = run_plan(plan, plugins, Progress(quiet=args.quiet))

    from lusbench.results.document import LEADERBOARD_FILE, write_leaderboard
    from lusbench.results.render import stdout_console, table_renderable

    if args.json:
        write_leaderboard(doc, args.json)
    console = stdout_console()
    console.print(table_renderable(doc, width=console.width))
    written = [str(args.out / LEADERBOARD_FILE), *([str(args.json)] if args.json else [])]
    print(f"leaderboard written to {' and '.join(written)}; show it again with `lusbench leaderboard --out {args.out}`")
    return 0
