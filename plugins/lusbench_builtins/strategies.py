"""Built-in label strategies (docs/strategies.md: definitions, sources, arguments, when each is expected to help).

From the confidence: ``threshold:t``, ``soft``, ``weighted``, ``band:lo,hi``, ``smooth:eps``, ``svls:sigma`` and
``stochastic-threshold:lo,hi``; from the per-rater masks: ``random-rater`` and ``staple:soft`` / ``staple:t``.
Each maps a training batch to targets with tensor ops on the batch's device. No torch import at module level:
registration must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lusbench
from lusbench.api.hookspecs import Register
from lusbench.data.confidence import LEVEL_TOLERANCE, binarize
from lusbench.train.strategy import LabelStrategy, parse_float, parse_unit_float

if TYPE_CHECKING:
    import torch

DEFAULT_WEIGHT_FLOOR = 0.1
WEIGHT_FUNCTIONS = ("agreement", "c")  # weighted's weight=: max(|2c - 1|, floor) or max(c, floor)
DEFAULT_SMOOTHING = 0.1
DEFAULT_SVLS_SIGMA = 1.0
MAX_SVLS_SIGMA = 10.0
# The hard target of the strategies that smooth or weight one: positive where at least half the experts say so.
MAJORITY = 0.5


def _canonical(value: float) -> str:
    """Shortest text that names a spec number stably: 0.60 -> '0.6', 1.0 -> '1'."""
    return format(value, ".15g")


def _reject_extra(name: str, extra: tuple[str, ...], unknown: dict[str, str], usage: str) -> None:
    if extra or unknown:
        given = ", ".join([*extra, *(f"{k}={v}" for k, v in unknown.items())])
        raise ValueError(f"{name} got unexpected argument(s) {given}; usage: {usage}")


def _ordered_pair(name: str, lo: str | None, hi: str | None, usage: str, *, low_open: bool) -> tuple[float, float]:
    """``lo < hi``, both in [0, 1] (``lo`` in (0, 1] with ``low_open``), from a two-argument spec."""
    if lo is None or hi is None:
        raise ValueError(f"{name} needs two numbers LO,HI; usage: {usage}")
    low = parse_float(lo, f"{name} LO", 0.0, 1.0, low_open=low_open)
    high = parse_float(hi, f"{name} HI", 0.0, 1.0, low_open=True)
    if not low < high:
        raise ValueError(f"{name} needs LO < HI, got {lo} >= {hi}; usage: {usage}")
    return low, high


def _hard(confidence: torch.Tensor) -> torch.Tensor:
    return binarize(confidence, MAJORITY).to(confidence.dtype)


class ThresholdStrategy(LabelStrategy):
    """Hard target: a pixel is positive where the expert confidence is at least ``t``. The usual practice of
    training on a consensus mask (majority vote at t = 0.5)."""

    sweep_parameter = "t"

    def __init__(self, t: float) -> None:
        self.t = t
        self.name = f"threshold:{_canonical(t)}"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        return binarize(confidence, self.t).to(confidence.dtype), None


class SoftStrategy(LabelStrategy):
    """Soft target: the network is trained against the confidence itself (soft labels; with the default loss's
    semimetric Dice, Wang & Blaschko 2023, both loss terms are minimised at p = c)."""

    name = "soft"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        return confidence, None


class WeightedStrategy(LabelStrategy):
    """Hard target at 0.5, each pixel's loss weighted by how sure the experts were.

    ``weight=agreement`` (default): ``max(|2c - 1|, floor)``, 1 where the experts agree (c = 0 or 1), ``floor``
    where they are split (c = 0.5), so uncertain pixels still contribute a little instead of being ignored.
    ``weight=c``: ``max(c, floor)``, the confidence itself as the weight, the plainest confidence-weighted loss:
    sure positives count fully, background only ``floor``, so it trades specificity for sensitivity.
    """

    sweep_parameter = "floor"

    def __init__(self, floor: float = DEFAULT_WEIGHT_FLOOR, weight: str = WEIGHT_FUNCTIONS[0]) -> None:
        self.floor, self.weight = floor, weight
        args = [] if floor == DEFAULT_WEIGHT_FLOOR else [_canonical(floor)]
        args += [] if weight == WEIGHT_FUNCTIONS[0] else [f"weight={weight}"]
        self.name = ":".join(["weighted", ",".join(args)]) if args else "weighted"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sureness = (2.0 * confidence - 1.0).abs() if self.weight == "agreement" else confidence
        return _hard(confidence), sureness.clamp_min(self.floor)


class BandStrategy(LabelStrategy):
    """Ignore band: positive where c >= hi, negative where c <= lo, and no loss at all in between, so the network is
    never told either way where the experts hesitated (the "void" label that PASCAL VOC puts on the uncertain border
    of every object and that training ignores; Everingham et al., IJCV 2010)."""

    sweep_parameter = "lo"

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.name = f"band:{_canonical(lo)},{_canonical(hi)}"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positive = binarize(confidence, self.hi)
        # c <= lo up to the level tolerance, as binarize compares c >= t.
        decided = positive | (confidence <= self.lo + LEVEL_TOLERANCE)
        return positive.to(confidence.dtype), decided.to(confidence.dtype)


class SmoothStrategy(LabelStrategy):
    """Uniform label smoothing (Szegedy et al., CVPR 2016) of the hard target at 0.5: ``(1 - eps) y + eps / 2``, the
    two-class form for a per-class sigmoid output, so targets are eps/2 and 1 - eps/2 instead of 0 and 1."""

    sweep_parameter = "eps"

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.name = f"smooth:{_canonical(eps)}"

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _hard(confidence) * (1.0 - self.eps) + self.eps / 2.0, None


class SVLSStrategy(LabelStrategy):
    """Spatially varying label smoothing (Islam & Glocker, IPMI 2021): the hard target at 0.5 convolved, per class,
    with their 3x3 kernel: a Gaussian of width ``sigma`` whose centre weight is replaced by the sum of the
    neighbours' weights, then normalised, so the centre keeps half the mass. Interior pixels keep targets 0 and 1;
    pixels near a boundary get in-between targets in proportion to how many neighbours disagree. Borders are
    padded by replication, as in the paper's code."""

    sweep_parameter = "sigma"

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma
        self.name = f"svls:{_canonical(sigma)}"

    def kernel(self) -> list[list[float]]:
        """The 3x3 SVLS kernel (sums to 1; centre 0.5)."""
        import math

        gauss = [[math.exp(-(dy * dy + dx * dx) / (2 * self.sigma ** 2)) for dx in (-1, 0, 1)] for dy in (-1, 0, 1)]
        neighbours = sum(map(sum, gauss)) - gauss[1][1]
        gauss[1][1] = neighbours
        return [[v / (2 * neighbours) for v in row] for row in gauss]

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, None]:
        import torch
        import torch.nn.functional as F

        k = confidence.shape[1]
        weight = torch.tensor(self.kernel(), dtype=confidence.dtype, device=confidence.device).expand(k, 1, 3, 3)
        padded = F.pad(_hard(confidence), (1, 1, 1, 1), mode="replicate")
        return F.conv2d(padded, weight, groups=k).clamp_(0.0, 1.0), None


class StochasticThresholdStrategy(LabelStrategy):
    """A hard target at a threshold drawn uniformly from [lo, hi] per sample and step: the network sees every
    consensus between a lenient and a strict one, in proportion. lusbench's own confidence-map counterpart of
    random-rater label sampling (Jensen et al., MICCAI 2019); no published source of its own."""

    sweep_parameter = "lo"
    stochastic = True

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.name = f"stochastic-threshold:{_canonical(lo)},{_canonical(hi)}"

    def targets(self, confidence: torch.Tensor, *, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        import torch

        b = confidence.shape[0]
        draw = torch.rand(b, device=confidence.device, generator=generator, dtype=confidence.dtype)
        t = (self.lo + (self.hi - self.lo) * draw).view(b, *[1] * (confidence.dim() - 1))
        return binarize(confidence, t).to(confidence.dtype), None


class RandomRaterStrategy(LabelStrategy):
    """One rater's own mask per sample and step, drawn uniformly: the network is trained on real annotations, never
    on a consensus nobody drew, and over the epochs sees every rater (Jensen et al., "Improving uncertainty
    estimation in convolutional neural networks using inter-rater agreement", MICCAI 2019)."""

    name = "random-rater"
    needs_raters = True
    stochastic = True

    def targets(self, confidence: torch.Tensor, *, raters: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, None]:
        import torch

        b, r = raters.shape[:2]
        pick = torch.randint(r, (b,), device=raters.device, generator=generator)
        return raters[torch.arange(b, device=raters.device), pick].to(confidence.dtype), None


class StapleStrategy(LabelStrategy):
    """The STAPLE consensus of the raters (Warfield, Zou & Wells, IEEE TMI 2004): an EM estimate of each rater's
    sensitivity and specificity and of the posterior foreground probability, per frame and class
    (:func:`lusbench.data.staple.staple_batch`), used as a soft target (``staple:soft``) or binarized at ``t``.
    Unlike the mean confidence, a rater who is often wrong counts less."""

    needs_raters = True

    def __init__(self, t: float | None) -> None:
        self.t = t
        # Only the binarized form has a number to sweep.
        self.sweep_parameter = None if t is None else "t"
        self.name = "staple:soft" if t is None else f"staple:{_canonical(t)}"

    def targets(self, confidence: torch.Tensor, *, raters: torch.Tensor) -> tuple[torch.Tensor, None]:
        from lusbench.data.staple import staple_batch

        # Per batch, after augmentation, rather than once per frame before training: the strategy contract hands a
        # strategy batches only, and STAPLE's parameters do not depend on pixel order, so the consensus of a flipped
        # frame is the flipped consensus. The EM costs little beside a training step (docs/strategies.md).
        posterior = staple_batch(raters).to(confidence.dtype)
        return (posterior if self.t is None else binarize(posterior, self.t).to(confidence.dtype)), None


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


def weighted(floor: str | None = None, *extra: str, weight: str = WEIGHT_FUNCTIONS[0],
             **unknown: str) -> WeightedStrategy:
    """Hard mask at 0.5, loss weighted per pixel by max(|2c-1|, floor), or max(c, floor) with weight=c (floor 0.1)."""
    usage = "weighted[:FLOOR][,weight=agreement|c] with FLOOR in [0, 1]"
    _reject_extra("weighted", extra, unknown, usage)
    if weight not in WEIGHT_FUNCTIONS:
        raise ValueError(f"weighted weight= must be one of {', '.join(WEIGHT_FUNCTIONS)}, got '{weight}'; usage: {usage}")
    value = DEFAULT_WEIGHT_FLOOR if floor is None else parse_unit_float(floor, "weighted floor", low_open=False)
    return WeightedStrategy(value, weight)


def band(lo: str | None = None, hi: str | None = None, *extra: str, **unknown: str) -> BandStrategy:
    """Ignore band: positive where c >= HI, negative where c <= LO, no loss in between (band:0.2,0.8)."""
    usage = "band:LO,HI with 0 <= LO < HI <= 1, e.g. band:0.2,0.8"
    _reject_extra("band", extra, unknown, usage)
    return BandStrategy(*_ordered_pair("band", lo, hi, usage, low_open=False))


def smooth(eps: str | None = None, *extra: str, **unknown: str) -> SmoothStrategy:
    """Uniform label smoothing of the hard mask at 0.5: targets eps/2 and 1-eps/2 (smooth:0.1, eps in [0, 1))."""
    _reject_extra("smooth", extra, unknown, "smooth[:EPS] with EPS in [0, 1), e.g. smooth:0.1")
    return SmoothStrategy(DEFAULT_SMOOTHING if eps is None else parse_float(eps, "smooth eps", 0.0, 1.0, high_open=True))


def svls(sigma: str | None = None, *extra: str, **unknown: str) -> SVLSStrategy:
    """Spatially varying label smoothing (Islam & Glocker 2021) of the hard mask at 0.5 (svls:1, sigma in (0, 10])."""
    _reject_extra("svls", extra, unknown, "svls[:SIGMA] with SIGMA in (0, 10], e.g. svls:1")
    if sigma is None:
        return SVLSStrategy(DEFAULT_SVLS_SIGMA)
    return SVLSStrategy(parse_float(sigma, "svls sigma", 0.0, MAX_SVLS_SIGMA, low_open=True))


def stochastic_threshold(lo: str | None = None, hi: str | None = None, *extra: str,
                         **unknown: str) -> StochasticThresholdStrategy:
    """Hard mask at a threshold drawn uniformly in [LO, HI] per sample and step (stochastic-threshold:0.3,0.7)."""
    usage = "stochastic-threshold:LO,HI with 0 < LO < HI <= 1, e.g. stochastic-threshold:0.3,0.7"
    _reject_extra("stochastic-threshold", extra, unknown, usage)
    return StochasticThresholdStrategy(*_ordered_pair("stochastic-threshold", lo, hi, usage, low_open=True))


def random_rater(*extra: str, **unknown: str) -> RandomRaterStrategy:
    """One rater's own mask per sample and step, drawn uniformly (needs a dataset with rater masks)."""
    _reject_extra("random-rater", extra, unknown, "random-rater (no arguments)")
    return RandomRaterStrategy()


def staple(mode: str = "soft", *extra: str, **unknown: str) -> StapleStrategy:
    """STAPLE EM consensus of the raters, soft (staple:soft) or binarized at T (staple:0.5); needs rater masks."""
    usage = "staple:soft or staple:T with T in (0, 1]"
    _reject_extra("staple", extra, unknown, usage)
    return StapleStrategy(None if mode == "soft" else parse_unit_float(mode, "staple threshold"))


@lusbench.hookimpl
def register_label_strategies(register: Register) -> None:
    register("threshold", threshold)
    register("soft", soft)
    register("weighted", weighted)
    register("band", band)
    register("smooth", smooth)
    register("svls", svls)
    register("stochastic-threshold", stochastic_threshold)
    register("random-rater", random_rater)
    register("staple", staple)
