"""What a metric is: its stable name, its direction and a one-line description (docs/leaderboard.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MetricDef:
    """A leaderboard metric. ``name`` is lowercase and dotted where scoped (``dice.b_lines``)."""

    name: str
    higher_is_better: bool
    description: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)
