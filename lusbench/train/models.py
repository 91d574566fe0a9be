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


def check_model(builder: ModelBuilder, images: torch.Tensor, classes: int) -> None:
    """Build the model once and run it on a sample batch: a model that cannot take these images (e.g. a
    size its encoder cannot halve often enough) is reported as one line naming it. Raises UserError."""
    import torch

    from lusbench.errors import UserError

    height, width = images.shape[-2:]
    try:
        model = builder.build(images.shape[1], classes).to(images.device).eval()
        with torch.no_grad():
            shape = tuple(model(images).shape)
    except Exception as exc:  # noqa: BLE001 - reported as the model's failure on this data
        raise UserError(f"--model '{builder.name}' cannot segment {height}x{width} images: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())}") from None
    expected = (images.shape[0], classes, height, width)
    if shape != expected:
        raise UserError(f"--model '{builder.name}' returned {shape} for input {tuple(images.shape)}, expected {expected}")
