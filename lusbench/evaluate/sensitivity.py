"""Sensitivity (power) analysis: can the downstream tasks tell a better segmentation from a worse one?

The reference masks of a dataset (its true masks where it has them, else its expert labels binarized at 0.5)
are degraded to controlled Dice levels, and every downstream task is run on the features of each level with
the task's own cross-validation (:meth:`lusbench.evaluate.tasks.DownstreamTask.evaluate_with_predictions`).
Each task metric gets the interval the leaderboard gives a row that trained no model: a 95% percentile
interval over :data:`~lusbench.evaluate.stats.N_TASK_BOOTSTRAP` patient resamples (within each class for
classification), the metric recomputed on every resample (:func:`lusbench.evaluate.stats.task_replicates`).
Every level is resampled with the same patient draws, so the levels' intervals are comparable.

**Degradation** (:class:`Degrader`). Each connected region of a reference mask (a finding: one B-line, a
consolidation, a segment of the pleural line) draws, once, a uniform ``u`` and a standard normal ``z``; each
(frame, class) slot draws a uniform ``v`` and a donor: a region of the same class in another frame. At
strength ``t`` in [0, 1]:

- *missed findings*: a region with ``u < MISS_AT_FULL * t`` is removed;
- *false-positive findings*: a slot with ``v < FALSE_POSITIVE_AT_FULL * t`` gains its donor region, at the
  donor's place (a real finding's shape where such findings occur);
- *boundary errors*: every kept region's boundary moves out (``z > 0``) or in by ``|z| * t *
  BOUNDARY_AT_FULL`` of the image height (dilation or erosion by a Euclidean distance), so thin regions may
  vanish.

The random draws are fixed for the dataset and seed, so Dice falls with ``t``; :meth:`Degrader.calibrate`
bisects ``t`` until the Dice of the degraded masks against the reference is within :data:`DICE_TOLERANCE` of
each requested level, and the achieved Dice is reported. Dice is the benchmark's ``true.dice``: per frame,
the mean over the classes present in the reference or the degraded mask, then the mean over frames.

numpy is imported inside the functions: ``lusbench data``'s parser reads :data:`DEFAULT_LEVELS` and
:data:`DICE_TOLERANCE` from here, and building the command line must stay free of numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from lusbench.data.dataset import LUSDataset
    from lusbench.evaluate.tasks import DownstreamTask

DEFAULT_LEVELS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
#: Largest distance between a requested Dice level and the achieved one.
DICE_TOLERANCE = 0.01
MISS_AT_FULL = 0.6
FALSE_POSITIVE_AT_FULL = 0.6
BOUNDARY_AT_FULL = 0.04
BISECTION_STEPS = 30
INTERVAL = "95% percentile interval, patient bootstrap (stratified by class for classification)"
SCHEMA = "lusbench.sensitivity/1"
# Slots (frame x class images) processed together: keeps the per-pixel temporaries near 64 MB at 128x128.
_CHUNK_SLOTS = 512


class DegradationError(ValueError):
    """A requested Dice level cannot be reached (within the tolerance) by the degradation."""


def reference_masks(dataset: LUSDataset) -> tuple[np.ndarray, str]:
    """``(N, K, H, W)`` bool masks that the degradation starts from, and what they are."""
    if dataset.true_masks is not None:
        return dataset.true_masks, "true masks"
    from lusbench.data.confidence import binarize

    return binarize(dataset.confidence_float(), 0.5), "expert labels binarized at 0.5"


def frame_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean over frames of the per-frame mean Dice over the classes present in either mask (NaN: none anywhere)."""
    import numpy as np

    n, k = ref.shape[:2]
    tp = (pred & ref).reshape(n, k, -1).sum(axis=2)
    total = pred.reshape(n, k, -1).sum(axis=2) + ref.reshape(n, k, -1).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2.0 * tp / total, np.nan)
    present = ~np.isnan(dice).all(axis=1)
    return float(np.nanmean(dice[present], axis=1).mean()) if present.any() else float("nan")


class Degrader:
    """Degrades fixed reference masks at any strength ``t`` with the same random draws (module docstring)."""

    def __init__(self, masks: np.ndarray, seed: int) -> None:
        import numpy as np
        from scipy.ndimage import distance_transform_edt, find_objects, label

        self.shape = masks.shape
        n, k, h, w = masks.shape
        self.height = h
        slots = masks.reshape(n * k, h, w)
        self.ref = slots
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = True  # 8-connected within an image, never across frames or classes
        labels, count = label(slots, structure=structure)
        self.count = count
        # Per pixel: the region nearest to it (its own inside a mask) and a signed distance to that region's
        # boundary, so that a region moved by e pixels holds exactly the pixels with distance <= e.
        self.nearest = np.zeros(slots.shape, dtype=np.int32)
        self.distance = np.full(slots.shape, np.inf, dtype=np.float32)
        for i in np.flatnonzero(slots.reshape(n * k, -1).any(axis=1)):
            outside, index = distance_transform_edt(~slots[i], return_indices=True)
            inside = distance_transform_edt(slots[i])
            self.nearest[i] = labels[i][index[0], index[1]]
            self.distance[i] = np.where(slots[i], 0.5 - inside, outside - 0.5)
        rng = np.random.default_rng(seed)
        self.miss_draw = rng.random(count + 1)
        self.shift_draw = rng.standard_normal(count + 1)
        # Donors: for each slot a random region of the same class, from another frame where possible.
        region_slot = np.zeros(count + 1, dtype=np.int64)
        region_slot[1:] = [where[0].start for where in find_objects(labels)]
        self.fp_draw = rng.random(n * k)
        self.donor = np.zeros(n * k, dtype=np.int64)
        for c in range(k):
            regions = 1 + np.flatnonzero(region_slot[1:] % k == c)
            for i in range(c, n * k, k) if regions.size else ():
                choices = regions[region_slot[regions] // k != i // k]
                if choices.size:
                    self.donor[i] = choices[rng.integers(choices.size)]
        self.donor_slot = region_slot[self.donor]

    def masks(self, strength: float) -> np.ndarray:
        """``(N, K, H, W)`` bool: the reference degraded at ``strength`` in [0, 1]."""
        import numpy as np

        kept = self.miss_draw >= MISS_AT_FULL * strength
        kept[0] = False  # label 0 is the background
        offset = (self.shift_draw * strength * BOUNDARY_AT_FULL * self.height).astype(np.float32)
        out = np.empty(self.ref.shape, dtype=bool)
        for start in range(0, len(out), _CHUNK_SLOTS):
            part = slice(start, start + _CHUNK_SLOTS)
            near = self.nearest[part]
            out[part] = kept[near] & (self.distance[part] <= offset[near])
        gains = np.flatnonzero((self.fp_draw < FALSE_POSITIVE_AT_FULL * strength) & (self.donor > 0))
        for i in gains:
            source = self.donor_slot[i]
            out[i] |= self.ref[source] & (self.nearest[source] == self.donor[i])
        return out.reshape(self.shape)

    def dice(self, strength: float) -> float:
        return frame_dice(self.masks(strength), self.ref.reshape(self.shape))

    def calibrate(self, target: float, tolerance: float = DICE_TOLERANCE) -> tuple[float, float]:
        """``(strength, achieved Dice)`` for a target Dice; DegradationError when it cannot be reached."""
        if target >= 1.0:
            return 0.0, self.dice(0.0)
        low, high = 0.0, 1.0
        floor = self.dice(high)
        if floor > target + tolerance:
            raise DegradationError(f"Dice {target:g} is below what the degradation reaches ({floor:.3f} at full strength)")
        best = (high, floor)
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (low + high)
            achieved = self.dice(mid)
            if abs(achieved - target) < abs(best[1] - target):
                best = (mid, achieved)
            if abs(achieved - target) <= tolerance / 4:
                break
            low, high = (mid, high) if achieved > target else (low, mid)
        if abs(best[1] - target) > tolerance:
            raise DegradationError(f"Dice {target:g} not reached within {tolerance:g} (closest {best[1]:.3f})")
        return best


@dataclass
class MetricValue:
    """One task metric at one level: the point estimate and its interval (:data:`INTERVAL`)."""

    name: str
    higher_is_better: bool
    headline: bool
    value: float
    low: float
    high: float


def task_estimates(task: DownstreamTask, masks: np.ndarray, dataset: LUSDataset, seed: int) -> list[MetricValue]:
    """The task's metrics on the features of ``masks``, each with its patient-bootstrap interval."""
    import numpy as np

    from lusbench.evaluate.features import compute_features
    from lusbench.evaluate.stats import (
        CI_LEVEL,
        N_TASK_BOOTSTRAP,
        RANDOM_SEED,
        TaskRows,
        resample_weights,
        task_point,
        task_replicates,
    )
    from lusbench.evaluate.task_scores import task_metric

    features = compute_features(masks.astype(np.float32), dataset)
    values, predictions = task.evaluate_with_predictions(features, dataset, seed)
    out = []
    for metric in task.metric_defs():
        point, low, high = float(np.mean(values[metric.name])), float("nan"), float("nan")
        if predictions is not None and metric.score is not None:
            rows = TaskRows.of([predictions])
            scored = task_metric(task.name, metric.score)
            point = task_point([predictions], scored, rows)
            weights = resample_weights(np.zeros((1, len(rows.patients)), dtype=np.int64), rows.strata,
                                       n_boot=N_TASK_BOOTSTRAP, seed=RANDOM_SEED)
            boot = task_replicates([predictions], scored, rows, weights)
            boot = boot[np.isfinite(boot)]
            if len(boot) >= 2:
                tail = (1.0 - CI_LEVEL) / 2.0
                low, high = (float(q) for q in np.quantile(boot, [tail, 1.0 - tail]))
        out.append(MetricValue(metric.name, metric.higher_is_better, metric.headline, point, low, high))
    return out


def run_sensitivity(dataset: LUSDataset, tasks: Sequence[DownstreamTask], levels: Sequence[float] = DEFAULT_LEVELS, *,
                    seed: int = 0, tolerance: float = DICE_TOLERANCE) -> dict[str, Any]:
    """The whole analysis as a JSON-ready document (:data:`SCHEMA`): per level the strength, the achieved Dice
    and every metric of every task that can run on ``dataset`` (the others are listed with their reason)."""
    import numpy as np

    masks, source = reference_masks(dataset)
    degrader = Degrader(masks, seed)
    runnable = [t for t in tasks if t.skip_reason(dataset) is None]
    rows = []
    for target in levels:
        strength, achieved = degrader.calibrate(float(target), tolerance)
        degraded = degrader.masks(strength)
        metrics = [m for task in runnable for m in task_estimates(task, degraded, dataset, seed)]
        rows.append({"target_dice": float(target), "dice": achieved, "strength": strength,
                     "metrics": {m.name: {"value": m.value, "low": m.low, "high": m.high} for m in metrics}})
    defs = {d.name: d for t in runnable for d in t.metric_defs()}
    return {
        "schema": SCHEMA,
        "dataset": dataset.name,
        "reference": source,
        "patients": int(len(np.unique(dataset.patient))),
        "seed": seed,
        "tolerance": tolerance,
        "interval": INTERVAL,
        "degradation": {"miss_at_full": MISS_AT_FULL, "false_positive_at_full": FALSE_POSITIVE_AT_FULL,
                        "boundary_at_full": BOUNDARY_AT_FULL},
        "tasks": {t.name: [d.name for d in t.metric_defs()] for t in runnable},
        "skipped": {t.name: t.skip_reason(dataset) for t in tasks if t not in runnable},
        "metrics": {name: {"higher_is_better": d.higher_is_better, "headline": d.headline, "description": d.description}
                    for name, d in defs.items()},
        "levels": rows,
    }


def separated(doc: dict[str, Any], metric: str, better: float, worse: float) -> bool:
    """True when ``metric`` at Dice level ``better`` beats level ``worse`` with non-overlapping intervals."""
    by_level = {row["target_dice"]: row["metrics"][metric] for row in doc["levels"]}
    a, b = by_level[better], by_level[worse]
    if doc["metrics"][metric]["higher_is_better"]:
        return a["low"] > b["high"]
    return a["high"] < b["low"]


def table_lines(doc: dict[str, Any], metrics: Sequence[str] | None = None) -> list[str]:
    """The printed table: one row per level, one column per metric (default: each task's headline metric)."""
    names = list(metrics) if metrics is not None else [m for m, d in doc["metrics"].items() if d["headline"]]
    width = max([len(n) for n in names] + [22])
    head = f"{'target':>7}{'dice':>8}{'strength':>10}  " + "".join(f"{n:>{width + 2}}" for n in names)
    lines = [head]
    for row in doc["levels"]:
        cells = "".join(f"{_cell(row['metrics'][n]):>{width + 2}}" for n in names)
        lines.append(f"{row['target_dice']:>7.2f}{row['dice']:>8.3f}{row['strength']:>10.3f}  {cells}")
    return lines


def _cell(m: dict[str, float]) -> str:
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def sensitivity_figure(doc: dict[str, Any], metrics: Sequence[str] | None = None) -> Figure:
    """One panel per metric (default: each task's headline metric): the metric with its interval against the
    achieved Dice. Takes the JSON document of :func:`run_sensitivity` (``--json``), so a report can draw it."""
    import textwrap

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics) if metrics is not None else [m for m, d in doc["metrics"].items() if d["headline"]]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.2), squeeze=False)
    dice = [row["dice"] for row in doc["levels"]]
    for ax, name in zip(axes[0], names, strict=False):
        values = np.array([[row["metrics"][name][k] for k in ("value", "low", "high")] for row in doc["levels"]])
        ax.fill_between(dice, values[:, 1], values[:, 2], alpha=0.25, linewidth=0)
        ax.plot(dice, values[:, 0], marker="o")
        ax.set_xlabel("Dice of the degraded masks")
        ax.set_title(name + (" (higher is better)" if doc["metrics"][name]["higher_is_better"] else " (lower is better)"),
                     fontsize=9)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    title = f"{doc['dataset']}: {doc['reference']} degraded; {doc['patients']} patients; band: {doc['interval']}"
    # Wrapped to the figure's width (about 16 characters an inch at 8 pt): one panel is narrower than the title.
    fig.suptitle(textwrap.fill(title, int(16 * fig.get_figwidth())), fontsize=8)
    fig.tight_layout()
    return fig


def write_sensitivity_png(doc: dict[str, Any], path: Any, metrics: Sequence[str] | None = None) -> None:
    """Draw :func:`sensitivity_figure` into a PNG file, written atomically."""
    import io

    import matplotlib.pyplot as plt

    from lusbench.fileio import atomic_write_bytes

    fig = sensitivity_figure(doc, metrics)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())
