import numpy as np
import pytest

from lusbench.data.folds import patient_folds, patient_holdout


def _patients(n_patients: int = 23, frames: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(100, 100 + n_patients), frames))


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folds_partition_frames_and_never_share_a_patient(k, seed):
    patient = _patients()
    folds = patient_folds(patient, k, seed)
    assert len(folds) == k
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(len(patient)))
    for i in range(k):
        for j in range(i + 1, k):
            assert not set(patient[folds[i]]) & set(patient[folds[j]])
    sizes = [len(np.unique(patient[f])) for f in folds]
    assert max(sizes) - min(sizes) <= 1


def test_folds_depend_on_seed_and_are_reproducible():
    patient = _patients()
    a, b, c = (patient_folds(patient, 3, s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_holdout_splits_by_patient_inside_the_training_folds():
    patient = _patients()
    folds = patient_folds(patient, 3, 0)
    train = np.concatenate(folds[1:])
    fit, val = patient_holdout(train, patient, 0.2, seed=5)
    assert np.array_equal(np.sort(np.concatenate([fit, val])), np.sort(train))
    assert not set(patient[fit]) & set(patient[val])
    assert not (set(patient[fit]) | set(patient[val])) & set(patient[folds[0]])
    assert len(np.unique(patient[val])) == round(0.2 * len(np.unique(patient[train])))


def test_too_few_patients_is_an_error():
    with pytest.raises(ValueError, match="3 patients cannot fill 5 folds"):
        patient_folds(np.array([1, 1, 2, 3]), 5, 0)
    with pytest.raises(ValueError, match="at least 2 patients"):
        patient_holdout(np.array([0, 1]), np.array([4, 4]), 0.2, 0)
