"""Label strategies: where per-pixel expert confidence becomes training targets (docs/plugin-guide.md).

A strategy sees the confidence of a training batch, already on the training device, and returns
the targets (and optionally per-pixel loss weights) the network is trained against. A strategy that sets
:attr:`LabelStrategy.needs_raters` also receives the batch's per-rater masks, and one that sets
:attr:`LabelStrategy.stochastic` a random generator seeded from the training seed; the engine passes them as
keyword arguments only to the strategies that ask (:func:`strategy_targets`), so one-argument ``targets``
methods keep working. Most strategies override only :meth:`LabelStrategy.targets`; :meth:`LabelStrategy.loss`
defaults to per-pixel-weighted BCE-with-logits plus a soft Dice that is correct for soft targets (minimised at p = t).

torch is imported inside methods, not at module import, so that registering strategies is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from lusbench.data.dataset import LUSDataset


class LabelStrategy:
    """Base class of every label strategy. Subclass it and override :meth:`targets`.

    ``name`` is the canonical spec of the configured strategy (``"threshold:0.6"``); the leaderboard
    and the results store key results by it, so two differently configured strategies must have
    different names.
    """

    name: str = "strategy"
    #: Weight of the soft Dice term in the default loss (BCE weight is 1).
    dice_weight: float = 1.0
    #: The attribute holding the numeric setting this strategy is swept over (``"t"`` for ``threshold:t``), or None.
    #: The report plots a family of strategies (the same registered name) against it, instead of parsing specs.
    sweep_parameter: str | None = None
    #: True: :meth:`targets` is called as ``targets(confidence, raters=...)`` with the batch's per-rater masks
    #: ``(B, R, K, H, W)`` bool, augmented exactly as the images and the confidence; such a strategy only runs on a
    #: dataset with rater masks, and its trained folds are keyed by the rater masks too.
    needs_raters: bool = False
    #: True: the targets are random; :meth:`targets` also receives ``generator=``, a ``torch.Generator`` on the
    #: batch's device seeded from the training seed, and must draw every random number from it (reproducibility).
    stochastic: bool = False

    def sweep(self) -> dict[str, object] | None:
        """``{"family", "parameter", "value"}`` for the report's sweep figure, or None without a sweep parameter.

        The family is the spec's name (``threshold`` in ``threshold:0.6``)."""
        if self.sweep_parameter is None:
            return None
        return {"family": self.name.partition(":")[0], "parameter": self.sweep_parameter,
                "value": float(getattr(self, self.sweep_parameter))}

    def targets(self, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map confidence ``(B, K, H, W)`` in [0, 1] to ``(target, weight)``.

        ``target`` is ``(B, K, H, W)`` in [0, 1]; ``weight`` is ``(B, K, H, W)`` non-negative per-pixel
        loss weights, or None for uniform weights. Both stay on ``confidence``'s device. Strategies that set
        :attr:`needs_raters` or :attr:`stochastic` take the extra keyword arguments ``raters`` / ``generator``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement targets()")

    def loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Scalar training loss: weighted BCE-with-logits (mean over pixels) + ``dice_weight`` x soft Dice loss.

        The Dice term is the semimetric soft Dice (Wang & Blaschko 2023), per image and class and then averaged:
        ``1 - (2 I + 1) / (sum(w p) + sum(w t) + 1)`` with ``p = sigmoid(logits)`` and the intersection
        ``I = (sum(w p) + sum(w t) - sum(w |p - t|)) / 2``. For binary targets ``I = sum(w p t)``, the classic soft
        Dice exactly; for soft targets the term is ``sum(w |p - t|) / (sum(w p) + sum(w t) + 1)``, zero only at
        ``p = t``, whereas the classic form is minimised by pushing p to 1 wherever t > 0. The +1 smoothing keeps
        empty classes finite.
        """
        import torch
        import torch.nn.functional as F

        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if weight is None:
            bce_term = bce.mean()
        else:
            bce_term = (bce * weight).sum() / weight.sum().clamp_min(1e-6)
        prob = torch.sigmoid(logits)
        w = torch.ones_like(prob) if weight is None else weight
        dims = (2, 3)
        mass = (w * prob).sum(dims) + (w * target).sum(dims)
        inter = (mass - (w * (prob - target).abs()).sum(dims)) / 2.0
        dice_loss = 1.0 - (2.0 * inter + 1.0) / (mass + 1.0)
        return bce_term + self.dice_weight * dice_loss.mean()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def parse_float(text: str, what: str, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> float:
    """Parse a spec argument that must be a number in the interval from ``low`` to ``high`` (each end closed unless
    ``*_open``); a ValueError with a one-line reason otherwise (NaN is never in range)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got '{text}'") from None
    low_ok = value > low if low_open else value >= low
    high_ok = value < high if high_open else value <= high
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{what} must be in {interval}, got {text}")
    return value


def parse_unit_float(text: str, what: str, *, low_open: bool = True) -> float:
    """Parse a spec argument that must be a number in (0, 1] (or [0, 1] with ``low_open=False``)."""
    return parse_float(text, what, 0.0, 1.0, low_open=low_open)


def strategy_targets(strategy: Any, confidence: torch.Tensor, raters: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Call ``strategy.targets`` with the inputs it declares: ``raters=`` if it sets ``needs_raters``, ``generator=``
    if it sets ``stochastic`` (a fresh generator seeded 0 when none is given). The one place the engine, the
    contract check and ``lusbench strategies show`` call a strategy, so they all pass the same arguments."""
    kwargs: dict[str, Any] = {}
    if getattr(strategy, "needs_raters", False):
        if raters is None:
            raise ValueError(f"strategy '{strategy.name}' needs rater masks and was given none")
        kwargs["raters"] = raters
    if getattr(strategy, "stochastic", False):
        if generator is None:
            import torch

            generator = torch.Generator(device=confidence.device).manual_seed(0)
        kwargs["generator"] = generator
    return strategy.targets(confidence, **kwargs)


def check_servable(strategy: Any, dataset: LUSDataset) -> None:
    """Raise a one-line UserError if ``dataset`` lacks what ``strategy`` trains on (rater masks), before training."""
    from lusbench.errors import UserError

    if getattr(strategy, "needs_raters", False) and dataset.rater_masks is None:
        raise UserError(f"strategy '{strategy.name}' trains on per-rater masks, and dataset '{dataset.name}' has none "
                        "(use a dataset with rater masks, e.g. synthetic-lus:raters=3)")


def check_strategy(strategy: LabelStrategy, confidence: torch.Tensor, raters: torch.Tensor | None = None) -> None:
    """Run ``strategy`` once on a sample of real confidence (and its rater masks) and check its output against the
    contract.

    Called before training so that a broken strategy plugin is reported as one line naming it, not as a
    traceback in the middle of a run. Raises :class:`lusbench.errors.PluginError`.
    """
    import torch

    from lusbench.errors import PluginError

    def fail(problem: str) -> PluginError:
        return PluginError(f"strategy '{strategy.name}' ({type(strategy).__module__}.{type(strategy).__name__}) {problem}")

    try:
        target, weight = strategy_targets(strategy, confidence, raters)
    except Exception as exc:  # noqa: BLE001 - any failure here is the plugin's
        raise fail(f"failed in targets(): {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    for label, value in (("target", target), ("weight", weight)):
        if value is None and label == "weight":
            continue
        if not isinstance(value, torch.Tensor) or value.shape != confidence.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise fail(f"returned a {label} of shape {shape}, expected {tuple(confidence.shape)}")
        if not value.is_floating_point():
            # A bool or integer tensor passes every value check below, then fails inside the loss.
            raise fail(f"returned a {label} of dtype {str(value.dtype).removeprefix('torch.')}, expected a "
                       f"floating-point tensor (e.g. {label}.float())")
        if not torch.isfinite(value).all():
            raise fail(f"returned a {label} with NaN or infinite values")
    if target.min() < 0 or target.max() > 1:
        raise fail("returned targets outside [0, 1]")
    if weight is not None and weight.min() < 0:
        raise fail("returned negative weights")
