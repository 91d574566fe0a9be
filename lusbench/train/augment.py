"""Light training-time augmentation, applied to a whole batch on the training device.

Only transforms that keep an ultrasound frame plausible: a left-right flip (lateral mirror; never
up-down, since depth runs top to bottom) and a small gain / offset jitter of the grey levels. The
flip moves the confidence (and the per-rater masks, when given) with the image; intensity changes touch the
image only. All random numbers come from the caller's generator, so a seed fixes the augmentation exactly.
"""

from __future__ import annotations

import torch

GAIN = 0.15  # image * U(1 - GAIN, 1 + GAIN)
OFFSET = 0.05  # + U(-OFFSET, OFFSET)


def augment_batch(images: torch.Tensor, confidence: torch.Tensor, generator: torch.Generator,
                  raters: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Return augmented copies of ``images`` ``(B, 1, H, W)``, ``confidence`` ``(B, K, H, W)`` and ``raters``
    ``(B, R, K, H, W)`` (None stays None).

    ``generator`` must live on the tensors' device. The random draws do not depend on whether raters are given,
    so a strategy's augmentation is the same on a dataset with or without rater masks.
    """
    b = images.shape[0]
    draws = torch.rand(b, 3, device=images.device, generator=generator)
    flip = (draws[:, 0] < 0.5).view(b, 1, 1, 1)
    images = torch.where(flip, images.flip(-1), images)
    confidence = torch.where(flip, confidence.flip(-1), confidence)
    if raters is not None:
        raters = torch.where(flip.view(b, 1, 1, 1, 1), raters.flip(-1), raters)
    gain = (1.0 + GAIN * (2.0 * draws[:, 1] - 1.0)).view(b, 1, 1, 1)
    offset = (OFFSET * (2.0 * draws[:, 2] - 1.0)).view(b, 1, 1, 1)
    return (images * gain + offset).clamp_(0.0, 1.0), confidence, raters
