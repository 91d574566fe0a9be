"""The three clinical downstream tasks of the study: S/F ratio, S/F change and 30-day readmission (docs/tasks.md).

Each task fits a scikit-learn pipeline to the segmentation features with repeated patient-grouped
cross-validation (:class:`lusbench.evaluate.tasks.SupervisedTask`). Spec arguments, all optional:

- ``model=linear`` (default: median imputation, standardization, ridge / L2 logistic regression) or
  ``model=gbm`` (median imputation, gradient-boosted trees); ``model`` may also be given positionally;
- ``repeats=N`` (default 5) and ``folds=K`` (default 5) of the cross-validation.

scikit-learn is imported inside methods so that registering these tasks stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import lusbench
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.tasks import SupervisedTask, fold_mean

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset

MODELS = ("linear", "gbm")
DEFAULT_REPEATS = 5
DEFAULT_FOLDS = 5
# Inverse L2 strength of the logistic models: strong, because patients are few next to the ~100 patient features.
LOGISTIC_C = 0.1
RIDGE_ALPHAS = np.logspace(-2, 4, 13)
# Gate tolerance of the S/F errors, in S/F ratio units (the ratio spans about 75..476).
S_F_TOLERANCE = 15.0


class ClinicalTask(SupervisedTask):
    """A built-in task configured from its spec arguments; subclasses define the target and the metrics."""

    spec_name = ""  # registered name, e.g. "sf-ratio"
    base_prefix = ""  # metric prefix of the default (linear) model, e.g. "sf_ratio"
    # (metric, higher_is_better, description, gate tolerance in the metric's unit); the first is the headline.
    metrics: tuple[tuple[str, bool, str, float], ...] = ()
    class_weight: str | None = None

    def __init__(self, model: str = "linear", repeats: str = str(DEFAULT_REPEATS), folds: str = str(DEFAULT_FOLDS)) -> None:
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got '{model}'")
        self.model = model
        self.repeats = _int_arg("repeats", repeats, minimum=1)
        self.folds = _int_arg("folds", folds, minimum=2)
        args = [f"model={model}"] if model != "linear" else []
        args += [f"repeats={self.repeats}"] if self.repeats != DEFAULT_REPEATS else []
        args += [f"folds={self.folds}"] if self.folds != DEFAULT_FOLDS else []
        self.name = self.spec_name + (":" + ",".join(args) if args else "")
        # Another model measures something else: its metrics get their own names (sf_ratio_gbm.mae).
        self.prefix = self.base_prefix if model == "linear" else f"{self.base_prefix}_{model}"

    def metric_defs(self) -> list[MetricDef]:
        # Each metric is the standard score of its name, so the statistics can resample its predictions.
        return [MetricDef(f"{self.prefix}.{m}", hib, desc, tolerance, headline=i == 0, score=m)
                for i, (m, hib, desc, tolerance) in enumerate(self.metrics)]

    def make_estimator(self, random_state: int) -> Any:
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # keep_empty_features: a feature never defined in a training fold becomes 0 instead of being dropped.
        imputer = SimpleImputer(strategy="median", keep_empty_features=True)
        if self.model == "gbm":
            from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

            gbm = GradientBoostingClassifier if self.classification else GradientBoostingRegressor
            return make_pipeline(imputer, gbm(n_estimators=100, max_depth=2, learning_rate=0.05, subsample=0.8,
                                              random_state=random_state))
        if self.classification:
            from sklearn.linear_model import LogisticRegression

            linear = LogisticRegression(C=LOGISTIC_C, class_weight=self.class_weight, max_iter=2000)
        else:
            from sklearn.linear_model import RidgeCV

            linear = RidgeCV(alphas=RIDGE_ALPHAS)
        return make_pipeline(imputer, StandardScaler(), linear)


def _int_arg(key: str, text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key} must be an integer >= {minimum}, got '{text}'") from None
    if value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got '{text}'")
    return value


class SFRatioTask(ClinicalTask):
    """Regress each visit's S/F ratio (SpO2/FiO2) from the visit's segmentation features."""

    spec_name = "sf-ratio"
    base_prefix = "sf_ratio"
    table = "visits"
    column = "sf_ratio"
    metrics = (
        ("mae", False, "S/F ratio: mean absolute error of the out-of-fold prediction per visit", S_F_TOLERANCE),
        ("rmse", False, "S/F ratio: root mean squared error of the out-of-fold prediction per visit", S_F_TOLERANCE),
        ("r2", True, "S/F ratio: coefficient of determination R^2 (0 = predicting the mean)", 0.15),
        ("pearson_r", True, "S/F ratio: Pearson correlation of prediction and truth", 0.10),
    )

    def score(self, y: np.ndarray, pred: np.ndarray, fold: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
        from sklearn.metrics import r2_score

        error = pred - y
        p = self.prefix
        return {f"{p}.mae": np.abs(error).mean(), f"{p}.rmse": np.sqrt((error**2).mean()),
                f"{p}.r2": r2_score(y, pred), f"{p}.pearson_r": fold_mean(_pearson, y, pred, fold)}


class SFChangeTask(ClinicalTask):
    """Classify each patient's S/F change between visits from both visits' features and their differences."""

    spec_name = "sf-change"
    base_prefix = "sf_change"
    table = "patients"
    column = "sf_change"
    classification = True
    patient_prefixes = ("first", "last", "change")
    # Balanced accuracy and F1 judge hard predictions: weight classes so the rarer one is not ignored.
    class_weight = "balanced"
    metrics = (
        ("auroc", True, "S/F change: area under the ROC curve (one-vs-rest macro with more than two classes)", 0.10),
        ("balanced_accuracy", True, "S/F change: balanced accuracy of the most probable class", 0.10),
        ("f1", True, "S/F change: F1 of class 1 (improved); macro F1 with more than two classes", 0.10),
    )

    def score(self, y: np.ndarray, pred: np.ndarray, fold: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
        from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

        # Hard-label metrics pool the folds' predictions (Forman & Scholz's recommendation for F1); AUROC is a
        # rank metric and is averaged over folds (lusbench.evaluate.tasks.fold_mean).
        label = classes[pred.argmax(axis=1)]
        if len(classes) == 2:
            auroc = fold_mean(lambda t, q: roc_auc_score(t, q[:, 1]), y, pred, fold)
            f1 = f1_score(y, label, pos_label=classes[1], zero_division=0.0)
        else:
            auroc = fold_mean(lambda t, q: roc_auc_score(t, q, multi_class="ovr", labels=classes), y, pred, fold)
            f1 = f1_score(y, label, average="macro", zero_division=0.0)
        p = self.prefix
        return {f"{p}.auroc": auroc, f"{p}.balanced_accuracy": balanced_accuracy_score(y, label), f"{p}.f1": f1}


class ReadmissionTask(ClinicalTask):
    """Predict 30-day readmission of each patient from the features of the last visit."""

    spec_name = "readmission-30d"
    base_prefix = "readmission_30d"
    table = "patients"
    column = "readmission_30d"
    classification = True
    patient_prefixes = ("last",)
    metrics = (
        ("auroc", True, "30-day readmission: area under the ROC curve", 0.10),
        ("auprc", True, "30-day readmission: area under the precision-recall curve (average precision; chance = base rate)",
         0.10),
        ("brier", False, "30-day readmission: Brier score of the predicted probability", 0.03),
    )

    def skip_reason(self, dataset: LUSDataset) -> str | None:
        reason = super().skip_reason(dataset)
        if reason is None and not set(np.unique(self.targets(dataset)[0])) <= {0.0, 1.0}:
            return "patients.readmission_30d must be 0 or 1"
        return reason

    def score(self, y: np.ndarray, pred: np.ndarray, fold: np.ndarray, classes: np.ndarray | None) -> dict[str, float]:
        from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

        p1 = pred[:, 1]
        p = self.prefix
        return {f"{p}.auroc": fold_mean(roc_auc_score, y, p1, fold),
                f"{p}.auprc": fold_mean(average_precision_score, y, p1, fold),
                f"{p}.brier": brier_score_loss(y, p1)}


def _pearson(y: np.ndarray, pred: np.ndarray) -> float:
    # Correlation with a constant prediction is undefined, not 0.
    return float(np.corrcoef(y, pred)[0, 1]) if np.std(pred) > 0 else float("nan")


def sf_ratio(model: str = "linear", repeats: str = str(DEFAULT_REPEATS), folds: str = str(DEFAULT_FOLDS)) -> SFRatioTask:
    """Regress each visit's S/F ratio from its segmentation features (MAE, RMSE, R2, Pearson r)."""
    return SFRatioTask(model, repeats, folds)


def sf_change(model: str = "linear", repeats: str = str(DEFAULT_REPEATS), folds: str = str(DEFAULT_FOLDS)) -> SFChangeTask:
    """Classify each patient's S/F change from both visits' features (AUROC, balanced accuracy, F1)."""
    return SFChangeTask(model, repeats, folds)


def readmission_30d(model: str = "linear", repeats: str = str(DEFAULT_REPEATS),
                    folds: str = str(DEFAULT_FOLDS)) -> ReadmissionTask:
    """Predict 30-day readmission from the last visit's features (AUROC, AUPRC, Brier)."""
    return ReadmissionTask(model, repeats, folds)


@lusbench.hookimpl
def register_downstream_tasks(register: Any) -> None:
    register("sf-ratio", sf_ratio)
    register("sf-change", sf_change)
    register("readmission-30d", readmission_30d)
