"""Example outside plugin: the ``ignore-band:LOW,HIGH`` label strategy.

Pixels with confidence >= HIGH are positives, pixels with confidence <= LOW are negatives, and the
pixels in between - where the expert hesitated - get zero loss weight, so the network is never told
either way about them.
"""

import lusbench
from lusbench.train.strategy import LabelStrategy, parse_unit_float


class IgnoreBandStrategy(LabelStrategy):
    """Hard targets at HIGH; pixels with confidence between LOW and HIGH get no loss (ignore-band:0.2,0.8)."""

    def __init__(self, low: str = "0.2", high: str = "0.8") -> None:
        self.low = parse_unit_float(low, "low", low_open=False)
        self.high = parse_unit_float(high, "high")
        if self.low >= self.high:
            raise ValueError(f"low must be below high, got {low} >= {high}")
        self.name = f"ignore-band:{self.low:g},{self.high:g}"

    def targets(self, confidence):
        target = (confidence >= self.high).float()
        decided = (confidence >= self.high) | (confidence <= self.low)
        return target, decided.float()


@lusbench.hookimpl
def register_label_strategies(register):
    register("ignore-band", IgnoreBandStrategy)
