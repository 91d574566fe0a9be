"""What a metric is: its stable name, its direction, a one-line description, and how it is gated and shown
(docs/leaderboard.md). The plugin that defines a metric declares all of it; the core hard-codes no metric name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: The ``lusbench check`` tolerance of a metric that declares none: suits values bounded in [0, 1].
FALLBACK_TOLERANCE = 0.05


@dataclass(frozen=True)
class MetricDef:
    """A leaderboard metric. ``name`` is lowercase and dotted where scoped (``dice.b_lines``).

    - ``tolerance``: the absolute change in the metric's bad direction that ``lusbench check`` accepts by
      default, in the metric's own unit (None: :data:`FALLBACK_TOLERANCE`). Size it to the seed-to-seed noise
      of a small run: tight enough to catch a broken strategy, loose enough not to flake.
    - ``headline``: shown in the compact leaderboard table and the report's main figures.
    - ``score``: for a task metric, the name of the standard score it is
      (:data:`lusbench.evaluate.task_scores.STANDARD_SCORES`: ``mae``, ``auroc``, ...). With it, and the task's
      stored per-patient predictions, its interval and paired test resample patients; without it, they use the
      per-repeat values.
    """

    name: str
    higher_is_better: bool
    description: str
    tolerance: float | None = None
    headline: bool = False
    score: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)
