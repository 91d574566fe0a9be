"""Model builders: a registered model spec becomes a fresh network per training run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class ModelBuilder:
    """Base class of what a ``register_models`` factory returns.

    ``name`` is the canonical spec (``"unet:resnet18"``). :meth:`build` is called once per training run
    (strategy x seed x fold) after seeding, so a builder must not cache modules.
    """

    name: str = "model"

    def build(self, in_channels: int, classes: int) -> torch.nn.Module:
        """Return a new module mapping ``(B, in_channels, H, W)`` to ``(B, classes, H, W)`` logits."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
