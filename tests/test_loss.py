"""The default loss: the semimetric soft Dice equals the classic soft Dice on binary targets and is minimised at
p = t on soft ones (where the classic form is not)."""

import pytest
import torch
import torch.nn.functional as F

from lusbench.train.strategy import LabelStrategy


class _Plain(LabelStrategy):
    name = "plain"


def classic_loss(logits, target, weight):
    """The loss before the fix: BCE + 1 - (2 sum(w p t) + 1) / (sum(w p) + sum(w t) + 1)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = torch.ones_like(target) if weight is None else weight
    bce_term = bce.mean() if weight is None else (bce * w).sum() / w.sum()
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (w * p * target).sum((2, 3)) + 1) / ((w * p).sum((2, 3)) + (w * target).sum((2, 3)) + 1)
    return bce_term + dice.mean()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_equals_classic_soft_dice_on_binary_targets(seed, weighted):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 9, 7, generator=gen, dtype=torch.float64) * 3
    target = (torch.rand(3, 4, 9, 7, generator=gen) < 0.4).double()
    weight = torch.rand(3, 4, 9, 7, generator=gen, dtype=torch.float64) if weighted else None
    new = _Plain().loss(logits, target, weight)
    old = classic_loss(logits.float(), target.float(), None if weight is None else weight.float())
    assert new.item() == pytest.approx(old.item(), rel=1e-6, abs=1e-6)


def _soft_targets(seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 11, (2, 3, 6, 6), generator=gen).float() / 10).clamp(0.05, 0.95)


@pytest.mark.parametrize("seed", range(3))
def test_soft_loss_minimised_at_p_equals_t_by_gradient_descent(seed):
    target = _soft_targets(seed)
    gen = torch.Generator().manual_seed(100 + seed)
    logits = (torch.randn(target.shape, generator=gen) * 4).requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(1500):
        optimizer.zero_grad()
        _Plain().loss(logits, target, None).backward()
        optimizer.step()
    assert (torch.sigmoid(logits) - target).abs().max() < 0.02


def test_soft_loss_gradient_vanishes_at_p_equals_t_and_perturbations_cost_more():
    target = _soft_targets(7)
    at_target = torch.logit(target).requires_grad_()
    loss = _Plain().loss(at_target, target, None)
    loss.backward()
    assert at_target.grad.abs().max() < 1e-6
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        moved = torch.logit(target) + 0.05 * torch.randn(target.shape, generator=gen)
        assert _Plain().loss(moved, target, None) > loss


def test_classic_form_is_not_minimised_at_p_equals_t():
    """What the fix is for: the classic term prefers p above a soft target (here lower loss at p = 0.9 than 0.5)."""
    target = torch.full((1, 1, 4, 4), 0.5)
    dice_only = [classic_loss(torch.logit(torch.full_like(target, p)), target, None)
                 - F.binary_cross_entropy_with_logits(torch.logit(torch.full_like(target, p)), target) for p in (0.5, 0.9)]
    assert dice_only[1] < dice_only[0]
    new = [_Plain().loss(torch.logit(torch.full_like(target, p)), target, None) for p in (0.5, 0.9)]
    assert new[0] < new[1]
