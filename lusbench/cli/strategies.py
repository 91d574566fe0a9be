"""``lusbench strategies show``: a picture of what strategies train on, before any CPU is spent training them.

For a few frames of a dataset: the image, the expert confidence of one class, and for every strategy its targets
and its per-pixel loss weights for that class (docs/cli/strategies.md).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from lusbench.data.dataset import LUSDataset

DEFAULT_FRAMES = 3
MAX_FRAMES = 8
MAX_STRATEGIES = 8
# The quick preset's dataset: what `lusbench run --preset quick` trains on.
DEFAULT_DATASET = "synthetic-lus:patients=60,size=32"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategies", help="show what label strategies train on",
                       description="Tools for label strategies. See docs/cli/strategies.md.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    show = actions.add_parser(
        "show", help="draw each strategy's targets and loss weights on a few frames",
        description="Draw, for a few frames, the image, the confidence of one class, and each strategy's targets "
                    "and loss weights for it, into a PNG. See docs/cli/strategies.md.")
    show.add_argument("specs", nargs="+", metavar="SPEC", help="label strategy specs (sweeps A..B/STEP allowed)")
    show.add_argument("--dataset", default=DEFAULT_DATASET, metavar="SPEC",
                      help="dataset to draw frames from (default: the quick preset's, %(default)s)")
    show.add_argument("--out", required=True, metavar="FILE.png", help="where to write the figure (PNG)")
    show.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                      help=f"how many frames: those with the most uncertain pixels of the class (1..{MAX_FRAMES}, "
                           "default: %(default)s)")
    show.add_argument("--class", dest="class_name", metavar="NAME",
                      help="class to draw (default: the one with the most uncertain pixels)")
    show.add_argument("--seed", type=int, default=0, help="seed of the one draw random strategies show (default: 0)")
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lusbench.api.plugins import load_plugins

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: expected a .png file")
    if not 1 <= args.frames <= MAX_FRAMES:
        raise UserError(f"--frames must be in 1..{MAX_FRAMES}, got {args.frames}")
    plugins = load_plugins(args.plugins)
    strategies = [plugins.strategies.create(spec, label or "SPEC")
                  for text in args.specs for spec, label in plugins.strategies.expand(text, "SPEC")]
    if len(strategies) > MAX_STRATEGIES:
        raise UserError(f"{len(strategies)} strategies do not fit one readable figure; show at most {MAX_STRATEGIES}")
    dataset = plugins.datasets.create(args.dataset)
    from lusbench.train.strategy import check_servable

    for strategy in strategies:
        check_servable(strategy, dataset)
    k = _class_index(dataset, args.class_name)
    frames = _frames(dataset, k, args.frames)
    figure = draw(dataset, strategies, frames, k, args.seed)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    from lusbench.fileio import atomic_write_bytes

    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out}: {len(frames)} frames x {len(strategies)} strategies, class {dataset.classes[k]}")
    return 0


def _class_index(dataset: LUSDataset, name: str | None) -> int:
    if name is None:
        uncertain = ((dataset.confidence > 0) & (dataset.confidence < dataset.confidence_scale)).sum((0, 2, 3))
        return int(uncertain.argmax())
    if name not in dataset.classes:
        raise UserError(f"--class {name}: dataset '{dataset.name}' has classes {', '.join(dataset.classes)}")
    return dataset.classes.index(name)


def _frames(dataset: LUSDataset, k: int, n: int) -> np.ndarray:
    """The ``n`` frames with the most uncertain pixels of class ``k`` (where strategies differ most), in order."""
    import numpy as np

    levels = dataset.confidence[:, k]
    uncertain = ((levels > 0) & (levels < dataset.confidence_scale)).sum((1, 2))
    return np.sort(np.argsort(-uncertain, kind="stable")[:n])


def draw(dataset: LUSDataset, strategies: list[Any], frames: np.ndarray, k: int, seed: int) -> Figure:
    """The figure: a column pair per frame; the first row holds the image and the confidence, then one row per
    strategy with its target and its loss weight. Three colour scales, shared by every panel of their kind:
    confidence, target (both 0..1) and weight (0..max(1, the largest weight))."""
    import torch
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from lusbench.train.strategy import strategy_targets

    index = torch.as_tensor(frames)
    confidence = torch.from_numpy(dataset.confidence_float())[index]
    raters = None if dataset.rater_masks is None else torch.from_numpy(dataset.rater_masks)[index]
    generator = torch.Generator().manual_seed(seed)
    drawn = []
    for strategy in strategies:
        with torch.no_grad():
            target, weight = strategy_targets(strategy, confidence, raters, generator)
        drawn.append((strategy, target[:, k].numpy(), None if weight is None else weight[:, k].numpy()))
    top = max([1.0, *(float(w.max()) for _, _, w in drawn if w is not None)])
    scales = {"confidence": ("magma", 1.0), "target": ("viridis", 1.0), "weight": ("cividis", top)}

    rows, cols = 1 + len(drawn), 2 * len(frames)
    figure = Figure(figsize=(1.45 * cols + 1.6, 1.45 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    figure.suptitle(f"{dataset.name}: class {dataset.classes[k]}", fontsize=9)

    def panel(ax: Any, values: Any, kind: str, title: str) -> None:
        cmap, vmax = scales[kind]
        ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=7, pad=2)

    for f, frame in enumerate(frames):
        axes[0, 2 * f].imshow(dataset.images[frame], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[0, 2 * f].set_title(f"frame {int(frame)}: image", fontsize=7, pad=2)
        panel(axes[0, 2 * f + 1], confidence[f, k].numpy(), "confidence", "confidence")
        for r, (strategy, target, weight) in enumerate(drawn, 1):
            one_draw = " (one draw)" if getattr(strategy, "stochastic", False) else ""
            panel(axes[r, 2 * f], target[f], "target", f"target{one_draw}")
            uniform = weight is None
            panel(axes[r, 2 * f + 1], torch.ones(target[f].shape).numpy() if uniform else weight[f], "weight",
                  "weight (uniform)" if uniform else "weight")
    axes[0, 0].set_ylabel("data", fontsize=8)
    for r, (strategy, _, _) in enumerate(drawn, 1):
        # name and arguments on two lines, so a long spec fits the row's height
        axes[r, 0].set_ylabel(strategy.name.replace(":", "\n", 1), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for kind, (cmap, vmax) in reversed(scales.items()):  # each new bar goes nearer the panels: confidence first
        colorbar = figure.colorbar(ScalarMappable(Normalize(0.0, vmax), cmap), ax=axes, location="right", shrink=0.3,
                                   aspect=15, pad=0.01)
        colorbar.set_label(kind, fontsize=7)
        colorbar.ax.tick_params(labelsize=6)
    return figure
