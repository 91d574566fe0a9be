"""Downstream tasks: patient-grouped CV, determinism, pairing, signal vs chance, skip rules, spec arguments."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from test_features import planted_dataset

from lusbench.api.plugins import load_plugins
from lusbench.errors import UserError
from lusbench.evaluate.features import FeatureSet, compute_features
from lusbench.evaluate.tasks import DownstreamTask, grouped_splits, oof_predictions

TASKS = ("sf-ratio", "sf-change", "readmission-30d")
METRICS = {
    "sf-ratio": {"sf_ratio.mae": False, "sf_ratio.rmse": False, "sf_ratio.r2": True, "sf_ratio.pearson_r": True},
    "sf-change": {"sf_change.auroc": True, "sf_change.balanced_accuracy": True, "sf_change.f1": True},
    "readmission-30d": {"readmission_30d.auroc": True, "readmission_30d.auprc": True, "readmission_30d.brier": False},
}


@pytest.fixture(scope="module")
def registry():
    return load_plugins().tasks


@pytest.fixture(scope="module")
def planted():
    ds = planted_dataset(patients=40)
    return ds, compute_features(ds.true_masks.astype(np.float32), ds)


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def shuffle_patients(features: FeatureSet, seed: int) -> FeatureSet:
    """The chance control: every patient's visit and patient features handed to another patient."""
    ids = features.patient_ids
    other = dict(zip(ids.tolist(), np.random.default_rng(seed).permutation(ids).tolist(), strict=True))
    keys = features.visit_keys.copy()
    keys[:, 0] = [other[p] for p in keys[:, 0]]
    return dataclasses.replace(features, visit_keys=keys, patient_ids=np.array([other[p] for p in ids.tolist()]))


def test_builtin_tasks_are_registered_with_their_metrics(registry):
    assert set(TASKS) <= set(registry.names())
    for name in TASKS:
        task = registry.create(name)
        assert isinstance(task, DownstreamTask) and task.name == name
        defs = task.metric_defs()
        assert {d.name: d.higher_is_better for d in defs} == METRICS[name]
        assert all(d.name.startswith(task.prefix + ".") and d.description for d in defs)
        assert registry.entries()[registry.names().index(name)].summary  # docstring first line for `lusbench plugins`


def test_registering_the_tasks_does_not_import_sklearn():
    code = "import sys, lusbench_builtins.tasks; sys.exit('sklearn' in sys.modules or 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("labels", [False, True])
def test_no_patient_crosses_a_split(labels):
    ds = planted_dataset(patients=23, zones=2)
    groups = ds.visits["patient"]  # two rows (visits) per patient
    y = np.repeat(ds.patients["readmission_30d"], 2) if labels else None
    splits = grouped_splits(groups, folds=5, repeats=4, seed=3, labels=y)
    assert len(splits) == 4
    for repeat in splits:
        assert len(repeat) == 5
        tested = np.concatenate([test for _, test in repeat])
        assert sorted(tested.tolist()) == list(range(len(groups)))  # every row predicted exactly once
        for train, test in repeat:
            assert not set(groups[train]) & set(groups[test])
            assert len(train) + len(test) == len(groups)
            if labels:  # stratified: both classes on both sides
                assert len(set(y[train])) == 2 and len(set(y[test])) == 2
    assert [t.tolist() for _, t in splits[0]] != [t.tolist() for _, t in splits[1]]  # repeats reshuffle


@pytest.mark.parametrize("name", TASKS)
def test_task_cv_never_shares_a_patient(registry, planted, name):
    ds, _ = planted
    task = registry.create(name)
    _, patient, _ = task.targets(ds)
    splits = task.splits(ds, seed=0)
    assert len(splits) == task.repeats == 5
    for repeat in splits:
        for train, test in repeat:
            assert not set(patient[train]) & set(patient[test])


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_metrics_and_splits_do_not_depend_on_features(registry, planted, name):
    ds, features = planted
    task = registry.create(name)
    first = task.evaluate(features, ds, seed=7)
    assert task.evaluate(features, ds, seed=7) == first
    assert all(len(v) == 5 and np.isfinite(v).all() for v in first.values())
    assert task.evaluate(features, ds, seed=8) != first
    # Splits are a function of (dataset, seed): the same whatever feature set is evaluated afterwards.
    noisy = compute_features(np.random.default_rng(0).random(ds.true_masks.shape, dtype=np.float32), ds)
    before = task.splits(ds, seed=7)
    task.evaluate(noisy, ds, seed=7)
    after = task.splits(ds, seed=7)
    assert all(np.array_equal(a, b) for ra, rb in zip(before, after, strict=True)
               for fa, fb in zip(ra, rb, strict=True) for a, b in zip(fa, fb, strict=True))


def test_planted_signal_is_found(registry, planted):
    ds, features = planted
    real = {name: registry.create(name).evaluate(features, ds, seed=0) for name in TASKS}
    assert _mean(real["sf-ratio"]["sf_ratio.r2"]) > 0.8
    assert _mean(real["sf-change"]["sf_change.auroc"]) > 0.85
    assert _mean(real["readmission-30d"]["readmission_30d.auroc"]) > 0.85


def _null_mean(registry, controls, ds, name: str, metric: str) -> float:
    """Mean of ``metric`` over the shuffled-feature controls (2 CV repeats each): the chance level."""
    return float(np.mean([_mean(registry.create(f"{name}:repeats=2").evaluate(c, ds, seed=0)[metric]) for c in controls]))


def test_features_shuffled_across_patients_are_at_chance(registry):
    # One shuffle's null metric varies by ~0.05-0.1 around chance, so the control averages 8 shuffles of a
    # 100-patient cohort (2 CV repeats each: the shuffle, not the split, dominates the spread).
    ds = planted_dataset(patients=100, zones=2)
    features = compute_features(ds.true_masks.astype(np.float32), ds)
    controls = [shuffle_patients(features, s) for s in range(8)]

    def null_mean(name: str, metric: str) -> float:
        return _null_mean(registry, controls, ds, name, metric)

    assert null_mean("sf-ratio", "sf_ratio.r2") < 0.05
    assert abs(null_mean("sf-ratio", "sf_ratio.pearson_r")) < 0.12
    assert abs(null_mean("sf-change", "sf_change.auroc") - 0.5) < 0.08
    assert abs(null_mean("sf-change", "sf_change.balanced_accuracy") - 0.5) < 0.08
    assert abs(null_mean("readmission-30d", "readmission_30d.auroc") - 0.5) < 0.1


def test_skip_reasons_name_the_missing_field(registry):
    ds = planted_dataset(patients=10, zones=1)
    bare = dataclasses.replace(ds, visits=None, patients={"patient": ds.patients["patient"]})
    assert registry.create("sf-ratio").skip_reason(bare) == "dataset has no visits.sf_ratio"
    assert registry.create("sf-change").skip_reason(bare) == "dataset has no patients.sf_change"
    assert registry.create("readmission-30d").skip_reason(bare) == "dataset has no patients.readmission_30d"
    one_class = dataclasses.replace(ds, patients={**ds.patients, "readmission_30d": np.zeros(10, np.int32)})
    assert registry.create("readmission-30d").skip_reason(one_class) == "patients.readmission_30d has a single class"
    rare = dataclasses.replace(ds, patients={**ds.patients, "readmission_30d": (np.arange(10) < 4).astype(np.int32)})
    assert (registry.create("readmission-30d").skip_reason(rare)
            == "patients.readmission_30d has 4 patients in class 1, fewer than 5")
    not_binary = dataclasses.replace(ds, patients={**ds.patients, "readmission_30d": np.arange(10) % 2 * 2})
    assert registry.create("readmission-30d").skip_reason(not_binary) == "patients.readmission_30d must be 0 or 1"
    few = planted_dataset(patients=4, zones=1)
    assert registry.create("sf-ratio").skip_reason(few) == "visits.sf_ratio is known for 4 patients, fewer than 5"
    assert registry.create("sf-ratio").skip_reason(ds) is None
    # evaluate on data that cannot be cross-validated answers NaN rather than crashing.
    result = registry.create("readmission-30d").evaluate(compute_features(ds.true_masks.astype(np.float32), ds),
                                                          one_class, seed=0)
    assert all(len(v) == 5 and np.isnan(v).all() for v in result.values())


def test_small_data_reduces_folds_and_stays_finite(registry):
    # 12 patients, readmission in exactly 5: 8 folds drop to 5, so every test fold holds both classes.
    ds = planted_dataset(patients=12, zones=2, seed=4)
    ds = dataclasses.replace(ds, patients={**ds.patients, "readmission_30d": (np.arange(12) < 5).astype(np.int32)})
    task = registry.create("readmission-30d:folds=8")
    assert task.skip_reason(ds) is None
    splits = task.splits(ds, seed=0)
    assert all(len(repeat) == 5 for repeat in splits)
    y = ds.patients["readmission_30d"]
    assert all(set(y[test]) == {0, 1} for repeat in splits for _, test in repeat)
    result = task.evaluate(compute_features(ds.true_masks.astype(np.float32), ds), ds, seed=0)
    assert all(np.isfinite(v).all() for v in result.values())


def test_missing_classes_and_undefined_features_are_imputed(registry, planted):
    # A segmentation with no pleural line anywhere: its shape features are NaN in every frame.
    ds, _ = planted
    maps = ds.true_masks.astype(np.float32)
    maps[:, 0] = 0
    features = compute_features(maps, ds)
    assert np.isnan(features.visit[:, features.visit_names.index("pleural_line.thickness.mean")]).all()
    result = registry.create("sf-ratio").evaluate(features, ds, seed=0)
    assert np.isfinite(result["sf_ratio.mae"]).all() and _mean(result["sf_ratio.r2"]) > 0.5


def test_a_training_side_with_one_class_predicts_that_class():
    from sklearn.linear_model import LogisticRegression

    x = np.arange(6, dtype=float)[:, None]
    y = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    splits = [[(np.array([0, 1, 2]), np.array([3, 4])), (np.array([1, 2, 3, 4]), np.array([0, 5]))]]
    (pred,) = oof_predictions(lambda rs: LogisticRegression(), x, y, splits, seed=0, classes=np.array([0.0, 1.0]))
    np.testing.assert_array_equal(pred[3:5], [[1, 0]] * 2)  # trained on class 0 only
    assert pred[0, 0] > 0.5 and pred[5, 1] > 0.5


def test_spec_arguments(registry):
    task = registry.create("sf-ratio:gbm")
    assert (task.name, task.prefix, task.model) == ("sf-ratio:model=gbm", "sf_ratio_gbm", "gbm")
    assert [d.name for d in task.metric_defs()][0] == "sf_ratio_gbm.mae"
    task = registry.create("readmission-30d:repeats=3,folds=4")
    assert (task.name, task.prefix, task.repeats, task.folds) == ("readmission-30d:repeats=3,folds=4", "readmission_30d", 3, 4)
    assert registry.create("sf-change:model=linear,repeats=5").name == "sf-change"
    for bad, message in (("sf-ratio:model=forest", "model must be one of linear, gbm, got 'forest'"),
                         ("sf-change:repeats=0", "repeats must be an integer >= 1"),
                         ("readmission-30d:folds=x", "folds must be an integer >= 2, got 'x'"),
                         ("sf-ratio:nosuch=1", "nosuch")):
        with pytest.raises(UserError, match=message):
            registry.create(bad)


@pytest.mark.parametrize("name", TASKS)
def test_gbm_option_runs_and_finds_the_signal(registry, planted, name):
    ds, features = planted
    task = registry.create(f"{name}:model=gbm,repeats=2")
    result = task.evaluate(features, ds, seed=0)
    assert all(len(v) == 2 for v in result.values())
    score = {"sf-ratio": "sf_ratio_gbm.r2", "sf-change": "sf_change_gbm.auroc",
             "readmission-30d": "readmission_30d_gbm.auroc"}[name]
    assert _mean(result[score]) > 0.7


@pytest.fixture(scope="module")
def synthetic():
    return load_plugins().datasets.create


def test_tasks_run_on_the_synthetic_dataset(registry, synthetic):
    ds = synthetic("synthetic-lus:size=32")  # the default cohort, small images
    features = compute_features(ds.true_masks.astype(np.float32), ds)
    for name in TASKS:
        task = registry.create(name)
        assert task.skip_reason(ds) is None
        result = task.evaluate(features, ds, seed=0)
        assert set(result) == set(METRICS[name]) and all(np.isfinite(v).all() for v in result.values())


@pytest.mark.slow
def test_true_masks_beat_chance_on_the_default_synthetic_dataset_and_shuffled_features_do_not(registry, synthetic):
    ds = synthetic("synthetic-lus")
    features = compute_features(ds.true_masks.astype(np.float32), ds)
    real = {name: {k: _mean(v) for k, v in registry.create(name).evaluate(features, ds, seed=0).items()} for name in TASKS}
    base_rate = float(np.mean(ds.patients["readmission_30d"]))
    assert real["sf-ratio"]["sf_ratio.r2"] > 0.5
    assert real["sf-change"]["sf_change.auroc"] > 0.75 and real["sf-change"]["sf_change.balanced_accuracy"] > 0.65
    # The simulator's readmission depends on a latent risk the images do not show, so its ceiling is low.
    assert real["readmission-30d"]["readmission_30d.auroc"] > 0.55
    assert real["readmission-30d"]["readmission_30d.auprc"] > base_rate + 0.05
    controls = [shuffle_patients(features, s) for s in range(8)]

    def null_mean(name: str, metric: str) -> float:
        return _null_mean(registry, controls, ds, name, metric)

    assert null_mean("sf-ratio", "sf_ratio.r2") < 0.05
    assert abs(null_mean("sf-ratio", "sf_ratio.pearson_r")) < 0.15
    assert abs(null_mean("sf-change", "sf_change.auroc") - 0.5) < 0.12
    assert abs(null_mean("readmission-30d", "readmission_30d.auroc") - 0.5) < 0.12


@pytest.mark.parametrize("name", ["sf-ratio", "sf-change", "readmission-30d"])
def test_stored_predictions_reproduce_every_metric_through_its_standard_score(registry, planted, name):
    # The leaderboard recomputes task metrics from the stored predictions with the standard scores: they must
    # give the values the task itself reported, repeat by repeat.
    from lusbench.evaluate.stats import TaskRows, task_point
    from lusbench.evaluate.task_scores import task_metric

    ds, features = planted
    task = registry.create(name)
    values, predictions = task.evaluate_with_predictions(features, ds, seed=0)
    assert values == task.evaluate(features, ds, seed=0)
    assert len(predictions["repeats"]) == task.repeats and len(predictions["patient"]) == len(predictions["y_true"])
    rows = TaskRows.of([predictions])
    for d in task.metric_defs():
        assert d.score is not None
        assert task_point([predictions], task_metric(name, d.score), rows) == pytest.approx(_mean(values[d.name]), rel=1e-9)
