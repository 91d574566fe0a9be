"""Built-in label strategies: ``threshold:t``, ``soft`` and ``weighted`` (docs/strategies.md).

Each strategy maps the expert confidence of a training batch to targets with tensor ops on the
confidence's device. No torch import at module level: registration must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lusbench
from lusbench.api.hookspecs import Register
from lusbench.data.confidence import binarize
from lusbench.train.strategy import LabelStrategy, parse_unit_float

if TYPE_CHECKING:
    import torch

DEFAULT_WEIGHT_FLOOR = 0.1


def _canonical(value: float) -> str:
    """Shortest text that names a spec number stably: 0.60 -> '0.6', 1.0 -> '1'."""
    return format(value, ".15g")


def _reject_extra(name: str, extra: tuple[str, ...], unknown: dict[str, str], usage: str) -> None:
    if extra or unknown:
        given = ", ".join([*extra, *(f"{k}={v}" for k, v in unknown.items())])
        raise ValueError(f"{name} got unexpected argument(s) {given}; usage: {usage}")


class ThresholdStrategy(LabelStrategy):
    """Hard target: a pixel is positive where the expert confidence is at least ``t``."""

    sweep_parameter = "t"

    def __init__(self, t: float) -> None:
        self.t = t
        self.name = f"threshold:{_canonical(t)}"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        return binarize(confidence, self.t).to(confidence.dtype), None


class SoftStrategy(LabelStrategy):
    """Soft target: the network is trained against the confidence itself."""

    name = "soft"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        return confidence, None


class WeightedStrategy(LabelStrategy):
    """Hard target at 0.5, each pixel's loss weighted by how sure the experts were.

    ``weight = max(|2c - 1|, floor)``: 1 where the experts agree (c = 0 or 1), ``floor`` where they are
    split (c = 0.5), so uncertain pixels still contribute a little instead of being ignored.
    """

    sweep_parameter = "floor"

    def __init__(self, floor: float = DEFAULT_WEIGHT_FLOOR) -> None:
        self.floor = floor
        self.name = "weighted" if floor == DEFAULT_WEIGHT_FLOOR else f"weighted:{_canonical(floor)}"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = binarize(confidence, 0.5).to(confidence.dtype)
        weight = (2.0 * confidence - 1.0).abs().clamp_min(self.floor)
        return target, weight


def threshold(t: str | None = None, *extra: str, **unknown: str) -> ThresholdStrategy:
    """Binarize the confidence at t in (0, 1] and train on the hard mask (threshold:0.6)."""
    usage = "threshold:T with T in (0, 1], e.g. threshold:0.6"
    _reject_extra("threshold", extra, unknown, usage)
    if t is None:
        raise ValueError(f"threshold needs a threshold; usage: {usage}")
    return ThresholdStrategy(parse_unit_float(t, "threshold"))


def soft(*extra: str, **unknown: str) -> SoftStrategy:
    """Train directly against the per-pixel confidence (soft labels)."""
    _reject_extra("soft", extra, unknown, "soft (no arguments)")
    return SoftStrategy()


def weighted(floor: str | None = None, *extra: str, **unknown: str) -> WeightedStrategy:
    """Hard mask at 0.5, loss weighted per pixel by max(|2c-1|, floor) (weighted[:FLOOR], floor 0.1)."""
    _reject_extra("weighted", extra, unknown, "weighted or weighted:FLOOR with FLOOR in [0, 1]")
    if floor is None:
        return WeightedStrategy()
    return WeightedStrategy(parse_unit_float(floor, "weighted floor", low_open=False))


@lusbench.hookimpl
def register_label_strategies(register: Register) -> None:
    register("threshold", threshold)
    register("soft", soft)
    register("weighted", weighted)
