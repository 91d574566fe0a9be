"""Patient-grouped splits: no patient is ever on both sides of a split (docs/architecture.md)."""

from __future__ import annotations

import numpy as np


def patient_folds(patient: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Split frames into ``k`` folds by patient; return each fold's frame indices (sorted).

    Patients are shuffled with ``seed`` and dealt round-robin, so fold sizes differ by at most one
    patient. Raises ValueError when there are fewer patients than folds.
    """
    patients = np.unique(patient)
    if k < 2:
        raise ValueError(f"folds must be at least 2, got {k}")
    if len(patients) < k:
        raise ValueError(f"{len(patients)} patients cannot fill {k} folds")
    order = np.random.default_rng(seed).permutation(patients)
    fold_of = {int(p): i % k for i, p in enumerate(order)}
    assignment = np.array([fold_of[int(p)] for p in patient])
    return [np.flatnonzero(assignment == f) for f in range(k)]


def patient_holdout(indices: np.ndarray, patient: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (train, validation) by patient, about ``fraction`` of the patients held out.

    At least one patient goes to each side when there are two or more patients; ``fraction`` 0 holds out
    nothing (an empty validation split: no early stopping).
    """
    if fraction == 0:
        return indices, indices[:0]
    patients = np.unique(patient[indices])
    if len(patients) < 2:
        raise ValueError("need at least 2 patients for a validation split")
    n_val = int(round(fraction * len(patients)))
    n_val = min(max(n_val, 1), len(patients) - 1)
    val_patients = np.random.default_rng(seed).choice(patients, size=n_val, replace=False)
    is_val = np.isin(patient[indices], val_patients)
    return indices[~is_val], indices[is_val]
