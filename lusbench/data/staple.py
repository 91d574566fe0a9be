"""STAPLE: the EM consensus of several raters' binary masks (Warfield, Zou & Wells, IEEE TMI 23(7), 2004).

Each rater j has a sensitivity ``p_j`` (P(says 1 | truth 1)) and a specificity ``q_j`` (P(says 0 | truth 0)),
estimated jointly with the posterior probability ``W_i`` that pixel i is foreground by expectation-maximisation:

- E-step: ``W_i = f a_i / (f a_i + (1 - f) b_i)`` with ``a_i = prod_j p_j^D_ij (1 - p_j)^(1 - D_ij)`` and
  ``b_i = prod_j q_j^(1 - D_ij) (1 - q_j)^D_ij``, computed as log-odds so that many raters do not underflow;
- M-step: ``p_j = sum_i W_i D_ij / sum_i W_i``, ``q_j = sum_i (1 - W_i)(1 - D_ij) / sum_i (1 - W_i)``.

The prior ``f`` is the global foreground fraction of all raters' decisions (fixed, as in the paper's
"global prior" variant). Rater parameters start at 0.99 (the paper's high initial performance) and are kept in
[EPS, 1 - EPS] so that a rater who is never wrong does not give infinite log-odds.

:func:`staple` is the numpy form for one image (e.g. one frame's class); :func:`staple_batch` runs many
independent problems at once on torch tensors (each frame and class of a training batch). Both share the EM
(:func:`_staple_em`), which uses only operations numpy arrays and torch tensors have in common.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

EPS = 1e-6
INITIAL_PERFORMANCE = 0.99
DEFAULT_MAX_ITER = 50
DEFAULT_TOL = 1e-5


def staple(masks: np.ndarray, *, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL) -> np.ndarray:
    """Posterior foreground probability ``(...)`` float32 in [0, 1] of the bool masks ``(R, ...)`` of R raters.

    All pixels of ``masks[j]`` are one image: rater j has one sensitivity and one specificity over all of them.
    """
    posterior, _, _ = staple_em(masks, max_iter=max_iter, tol=tol)
    return posterior


def staple_em(masks: np.ndarray, *, max_iter: int = DEFAULT_MAX_ITER,
              tol: float = DEFAULT_TOL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`staple`'s posterior ``(...)`` and each rater's estimated sensitivity and specificity ``(R,)``."""
    masks = np.asarray(masks)
    if masks.dtype != bool or masks.ndim < 2:
        raise ValueError(f"staple needs bool rater masks (R, ...), got {masks.dtype} {masks.shape}")
    _check_iterations(max_iter, tol)
    decisions = masks.reshape(1, masks.shape[0], -1).astype(np.float64)
    posterior, sensitivity, specificity = _staple_em(decisions, max_iter, tol, np.log, np.exp)
    return (posterior.reshape(masks.shape[1:]).astype(np.float32), sensitivity[0].astype(np.float32),
            specificity[0].astype(np.float32))


def staple_batch(raters: torch.Tensor, *, max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL) -> torch.Tensor:
    """Per-frame, per-class STAPLE of rater masks ``(B, R, K, H, W)`` (bool or 0/1) -> ``(B, K, H, W)`` float32.

    Each (frame, class) is its own problem with its own rater parameters and prior, as :func:`staple` on
    ``raters[b, :, k]`` would give; all of them run together on the tensors' device.
    """
    import torch

    _check_iterations(max_iter, tol)
    b, r, k, h, w = raters.shape
    # float64: the same numbers as the numpy form; a few (R, H, W) tensors per frame cost little beside the model.
    decisions = raters.to(torch.float64).permute(0, 2, 1, 3, 4).reshape(b * k, r, h * w)
    posterior, _, _ = _staple_em(decisions, max_iter, tol, torch.log, torch.exp)
    return posterior.reshape(b, k, h, w).float()


def _check_iterations(max_iter: int, tol: float) -> None:
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"staple max_iter must be a positive integer, got {max_iter}")
    if not tol > 0:
        raise ValueError(f"staple tol must be positive, got {tol}")


def _staple_em(d: Any, max_iter: int, tol: float, log: Any, exp: Any) -> tuple[Any, Any, Any]:
    """EM on decisions ``d`` ``(P, R, N)`` (P problems, R raters, N pixels; 0/1 floats), numpy or torch.

    Returns the posterior ``(P, N)``, sensitivities and specificities ``(P, R)``. Iterates until no rater
    parameter of any problem moves by more than ``tol``, or ``max_iter`` times.
    """
    prior = d.mean(-1).mean(-1).clip(EPS, 1 - EPS)[:, None]  # (P, 1)
    log_prior_odds = log(prior) - log(1 - prior)
    n = d.shape[-1]
    votes = d.sum(-1)  # (P, R): each rater's foreground pixels

    def e_step(sens: Any, spec: Any) -> Any:
        # log a_i - log b_i = log-prior-odds + sum_j [D_ij log(p_j / (1 - q_j)) + (1 - D_ij) log((1 - p_j) / q_j)],
        # the sum over raters as one matrix product per problem (``@`` on numpy arrays and torch tensors alike).
        off = log(1 - sens) - log(spec)  # (P, R): a rater's 0
        on = log(sens) - log(1 - spec)  # (P, R): a rater's 1
        log_odds = log_prior_odds + off.sum(-1)[:, None] + ((on - off)[:, None, :] @ d)[:, 0, :]
        return 1 / (1 + exp(-log_odds.clip(-700, 700)))  # (P, N); the clip keeps exp finite in float64

    sens = d[:, :, 0] * 0 + INITIAL_PERFORMANCE  # (P, R), of d's type and device
    spec = sens * 1
    for _ in range(max_iter):
        posterior = e_step(sens, spec)
        mass = posterior.sum(-1)[:, None]  # (P, 1): sum_i W_i
        agreed = (d @ posterior[:, :, None])[:, :, 0]  # (P, R): sum_i W_i D_ij
        # sum_i (1 - W_i)(1 - D_ij) = N - sum_i W_i - sum_i D_ij + sum_i W_i D_ij
        new_sens = (agreed / (mass + EPS)).clip(EPS, 1 - EPS)
        new_spec = ((n - mass - votes + agreed) / (n - mass + EPS)).clip(EPS, 1 - EPS)
        moved = max(float(abs(new_sens - sens).max()), float(abs(new_spec - spec).max()))
        sens, spec = new_sens, new_spec
        if moved < tol:
            break
    # The posterior of the final parameters, so that it and the returned parameters agree.
    return e_step(sens, spec), sens, spec
