"""Regularised classifiers that use every feature, for video-level (or frame) rows.

Each model is ``median imputation -> [selector top-k] -> StandardScaler ->
classifier``, every step fitted on training rows only:

* ``logreg_l2``: logistic regression, L2 penalty (``C``);
* ``logreg_enet``: logistic regression, elastic net (``C``, ``l1_ratio``; saga);
* ``linear_svm``: linear SVM (``LinearSVC``, ``C``; score = decision value);
* ``rf``: random forest (200 trees; ``max_features``, ``min_samples_leaf``).

``DEFAULT_GRIDS`` give the hyper-parameter values the nested search tries
(:mod:`neopain.learn.nested`), ordered from the most to the least regularised, so
that ties go to the simpler model. Class weights are balanced in every model.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

MODELS = ("logreg_l2", "logreg_enet", "linear_svm", "rf")
#: L2-penalised linear models: fitted exactly in the span of the training rows
ROW_SPACE = ("logreg_l2", "linear_svm")

DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "logreg_l2": {"C": [0.0001, 0.001, 0.01, 0.1]},
    "logreg_enet": {"C": [0.01, 0.1], "l1_ratio": [0.5]},
    "linear_svm": {"C": [0.0001, 0.001, 0.01]},
    "rf": {"min_samples_leaf": [3]},
}


def check_model(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown video model {name!r}; known: {', '.join(MODELS)}")
    return name


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of a grid, in order (first parameter varies slowest)."""
    points: list[dict[str, Any]] = [{}]
    for name, values in grid.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        points = [{**p, name: v} for p in points for v in values]
    return points


def params_json(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def make_classifier(name: str, params: dict[str, Any] | None = None, seed: int = 0):
    check_model(name)
    params = dict(params or {})
    if name == "logreg_l2":
        return LogisticRegression(**{"C": 0.01, **params, "l1_ratio": 0.0,
                                     "class_weight": "balanced", "max_iter": 5000})
    if name == "logreg_enet":
        return LogisticRegression(**{"C": 0.1, "l1_ratio": 0.5, **params, "solver": "saga",
                                     "class_weight": "balanced", "max_iter": 3000,
                                     "tol": 1e-3, "random_state": seed})
    if name == "linear_svm":
        return LinearSVC(**{"C": 0.001, **params, "class_weight": "balanced",
                            "max_iter": 20000, "random_state": seed})
    return RandomForestClassifier(**{"n_estimators": 200, "max_features": "sqrt", **params,
                                     "class_weight": "balanced", "random_state": seed,
                                     "n_jobs": 1})


def make_model(name: str, params: dict[str, Any] | None = None, seed: int = 0,
               selector: str = "all", k: int | None = None) -> Pipeline:
    """The whole pipeline of one configuration (see module doc)."""
    steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if selector != "all":
        from neopain.learn.select import make_selector

        steps.append(("select", make_selector(selector, int(k))))
    steps += [("scale", StandardScaler()), ("clf", make_classifier(name, params, seed))]
    return Pipeline(steps)


def project(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, selector: str = "all",
            k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training and test rows after imputation, [selection], scaling (all fitted on the
    training rows) and, with more features than rows, projection onto the span of the
    scaled training rows. An L2-penalised linear model (with unpenalised or penalised
    intercept) fitted on the projection has the same decision function as on the scaled
    features: its weight vector lies in that span (representer theorem)."""
    front = make_model("logreg_l2", None, 0, selector, k)[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Ztr = front.fit_transform(Xtr, ytr)
    Zte = front.transform(Xte)
    if Ztr.shape[1] <= Ztr.shape[0]:
        return Ztr, Zte
    # span of the rows from the n x n Gram matrix: Z Z^T = U S^2 U^T, Z V = U S and
    # Z_test V = Z_test Z^T U / S (V = Z^T U / S); near-null directions dropped
    w, U = np.linalg.eigh(Ztr @ Ztr.T)
    keep = w > max(w.max(), 0.0) * 1e-10
    if not keep.any():  # every training row identical after scaling: nothing to learn
        return np.zeros((len(Ztr), 1)), np.zeros((len(Zte), 1))
    U, sv = U[:, keep], np.sqrt(w[keep])
    return U * sv, (Zte @ Ztr.T) @ U / sv


def fit(model: Pipeline, X: np.ndarray, y: np.ndarray) -> Pipeline:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of tiny inner folds
        return model.fit(X, y)


def positive_score(model, X: np.ndarray) -> np.ndarray:
    """Continuous score of class 1 (probability, or the SVM's decision value)."""
    clf = model[-1] if isinstance(model, Pipeline) else model
    if isinstance(clf, LinearSVC):
        s = model.decision_function(X).astype(np.float64)
        return s if list(model.classes_)[-1] == 1 else -s
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))
