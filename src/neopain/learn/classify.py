"""Classifiers on selected features, fitted per fold on training subjects only.

A configuration is ``[scaler] -> classifier`` on the top-``k`` features of the
fold's ranking (the ranking itself was fitted on the same fold's training
subjects by the ``select`` stage); scalers, selectors and classifiers only ever
see training rows. Classifiers (``CLASSIFIERS``): ``nb`` (Gaussian naive Bayes),
``knn``, ``svm`` (linear), ``svm_rbf``, ``rf`` (random forest). Two presets:

* ``paper`` -- Weka 3.6's defaults as the paper used them: ``NaiveBayes``
  (Gaussian, no scaling), ``IBk`` (1 neighbour, Euclidean on attributes
  min-max normalised with the training ranges), ``SMO`` (C = 1, linear
  PolyKernel, training data normalised to [0, 1]), SMO with ``RBFKernel``
  (gamma = 0.01) for ``svm_rbf``, ``RandomForest`` with 100 trees (the issue's
  choice; Weka 3.6's own default is 10) and ``int(log2(k) + 1)`` features per
  split, unpruned trees;
* ``default`` -- ``StandardScaler`` (training rows) before every classifier,
  kNN k = 1, linear SVM C = 1, RBF SVM ``gamma="scale"``, 100 trees.

Per-classifier ``params`` override the preset (parameter names of the
scikit-learn classifier). Scores for AUC: ``decision_function`` for the SVMs
(no Platt scaling: ``SVC(probability=True)`` is deprecated in scikit-learn 1.9,
and Weka's SMO without ``-M`` outputs hard 0/1 "probabilities"),
``predict_proba`` of the positive class otherwise.

Optional nested search (``search={"enabled": True, ...}``): a ``GridSearchCV``
over the classifier's grid inside each outer fold, its inner folds a
``StratifiedGroupKFold`` over the *training* subjects (``n_splits``, clipped
to the number of training subjects), refitted on the whole training part.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

from neopain.learn.split import iter_folds

log = logging.getLogger(__name__)

CLASSIFIERS = ("nb", "knn", "svm", "svm_rbf", "rf")
PRESETS = ("paper", "default")

#: one row per test keyframe and configuration; the first columns label the row (backbone,
#: layer: the feature table; protocol, fold; selector, k, classifier: the configuration)
SCORE_SCHEMA = pa.schema(
    [
        ("backbone", pa.string()), ("layer", pa.string()), ("protocol", pa.string()),
        ("fold", pa.int32()), ("selector", pa.string()), ("k", pa.int32()),
        ("classifier", pa.string()), ("video_id", pa.string()), ("subject_id", pa.string()),
        ("frame", pa.int32()), ("y", pa.int8()), ("score", pa.float64()), ("pred", pa.int8()),
        ("params", pa.string()),
    ]
)

#: default grids of the nested search (classifier parameter names)
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "nb": {"var_smoothing": [1e-9, 1e-6, 1e-3]},
    "knn": {"n_neighbors": [1, 3, 5, 9]},
    "svm": {"C": [0.01, 0.1, 1.0, 10.0]},
    "svm_rbf": {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1, 1.0]},
    "rf": {"max_features": ["sqrt", "log2"], "min_samples_leaf": [1, 5]},
}


def _check_name(name: str) -> None:
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}")


def make_classifier(name: str, params: dict[str, Any] | None = None, seed: int = 0,
                    preset: str = "default", n_features: int | None = None):
    """The bare scikit-learn classifier ``name`` of ``preset`` with ``params`` on top."""
    _check_name(name)
    if preset not in PRESETS:
        raise ValueError(f"unknown classifier preset {preset!r}; known: {', '.join(PRESETS)}")
    params = dict(params or {})
    if name == "nb":
        return GaussianNB(**params)
    if name == "knn":
        return KNeighborsClassifier(**{"n_neighbors": 1, **params})
    if name == "svm":
        return SVC(**{"kernel": "linear", "C": 1.0, **params, "random_state": seed})
    if name == "svm_rbf":
        gamma = 0.01 if preset == "paper" else "scale"
        return SVC(**{"kernel": "rbf", "C": 1.0, "gamma": gamma, **params,
                      "random_state": seed})
    base = {"n_estimators": 100}
    if preset == "paper" and n_features:
        base["max_features"] = min(n_features, int(math.log2(n_features) + 1))
    return RandomForestClassifier(**{**base, **params, "random_state": seed, "n_jobs": 1})


def make_pipeline(name: str, params: dict[str, Any] | None = None, seed: int = 0,
                  preset: str = "default", n_features: int | None = None) -> Pipeline:
    """``[scaler] -> classifier`` as the preset defines it (steps ``scale``, ``clf``)."""
    clf = make_classifier(name, params, seed, preset, n_features)
    if preset == "paper":
        if name in ("knn", "svm", "svm_rbf"):
            return Pipeline([("scale", MinMaxScaler()), ("clf", clf)])
        return Pipeline([("clf", clf)])
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def _final(model):
    if isinstance(model, GridSearchCV):
        model = model.best_estimator_
    return model[-1] if isinstance(model, Pipeline) else model


def positive_score(model, X: np.ndarray) -> np.ndarray:
    """Continuous score of the positive class (``y == 1``) for AUC."""
    final = _final(model)
    classes = list(model.classes_)
    if isinstance(final, SVC):
        s = model.decision_function(X).astype(np.float64)
        # decision_function is positive towards classes_[1]
        return s if classes[-1] == 1 else -s
    proba = model.predict_proba(X)
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))


def make_search(pipe: Pipeline, name: str, search: dict, groups: np.ndarray,
                y: np.ndarray, seed: int):
    """A nested ``GridSearchCV`` over training subjects, or None when it cannot run."""
    grid = dict((search.get("grids") or {}).get(name, DEFAULT_GRIDS.get(name, {})))
    if not grid:
        return None
    n_groups = len(np.unique(groups))
    # each class must be present in every inner training part: at most as many
    # folds as the subjects of the rarer class
    per_class = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    n_splits = min(int(search.get("n_splits", 3)), n_groups, per_class)
    if n_splits < 2:
        return None
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, {f"clf__{k}": list(v) for k, v in grid.items()},
                        scoring=search.get("scoring", "roc_auc"), cv=cv, refit=True,
                        n_jobs=1, error_score=np.nan)


def score_folds(
    X: np.ndarray, meta: pd.DataFrame, split: pd.DataFrame, rankings: pd.DataFrame,
    ks: list[int], classifiers: dict[str, dict], seed: int = 0,
    preset: str = "default", search: dict | None = None, pose: np.ndarray | None = None,
    *, backbone: str = "", layer: str = "",
) -> pd.DataFrame:
    """Per-frame test scores for every fold x k x classifier (:data:`SCORE_SCHEMA`).

    ``meta`` has columns video_id, subject_id, frame, y aligned with ``X``;
    ``rankings`` has columns fold, rank, feature (from the select stage). Every
    model is fitted on the fold's training rows only; ``params`` records the
    hyperparameters the nested search chose (empty without a search). ``pose`` (rows x
    angles or pose statistics): regressed out of ``X`` per fold, fitted on the training
    rows (:func:`neopain.learn.posecontrol.residualize`), as the select stage does.
    ``backbone`` and ``layer`` name the feature table in every row.
    """
    out = []
    protocol = split["protocol"].iloc[0]
    selector = rankings["selector"].iloc[0] if len(rankings) else ""
    search = dict(search or {})
    subjects = meta["subject_id"].to_numpy()
    for fold, tr, te in iter_folds(split, subjects):
        rank = rankings[rankings["fold"] == fold].sort_values("rank")["feature"].to_numpy()
        if not te.any() or len(rank) == 0:
            log.warning("protocol %s fold %s: skipped (%s)", protocol, fold,
                        "no test rows" if not te.any() else "no ranking: selector not fitted")
            continue
        ytr = meta.loc[tr, "y"].to_numpy()
        Xf = X
        if pose is not None:
            from neopain.learn.posecontrol import residualize
            Xf = residualize(X, pose, tr).astype(X.dtype)
        done: set[int] = set()
        for k_asked in ks:
            k = min(k_asked, len(rank))  # the real k: never more than the ranked features
            if k < k_asked:
                log.warning("protocol %s fold %s: select.k=%d exceeds the %d ranked features; "
                            "scored as k=%d%s", protocol, fold, k_asked, len(rank), k,
                            " (already scored)" if k in done else "")
            if k in done:
                continue
            done.add(k)
            cols = rank[:k]
            Xtr, Xte = Xf[np.ix_(tr, cols)], Xf[np.ix_(te, cols)]
            for cname, cparams in classifiers.items():
                model = make_pipeline(cname, cparams, seed, preset, n_features=len(cols))
                chosen = ""
                if search.get("enabled"):
                    gs = make_search(model, cname, search, subjects[tr], ytr, seed)
                    if gs is not None:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            gs.fit(Xtr, ytr, groups=subjects[tr])
                        model = gs
                        chosen = json.dumps({k2.removeprefix("clf__"): v for k2, v in
                                             gs.best_params_.items()}, sort_keys=True,
                                            default=str)
                if not isinstance(model, GridSearchCV):
                    model.fit(Xtr, ytr)
                score = positive_score(model, Xte)
                pred = model.predict(Xte).astype(np.int8)
                part = meta.loc[te, ["video_id", "subject_id", "frame", "y"]].copy()
                part.insert(0, "classifier", cname)
                part.insert(0, "k", k)
                part.insert(0, "selector", selector)
                part.insert(0, "fold", fold)
                part.insert(0, "protocol", protocol)
                part.insert(0, "layer", layer)
                part.insert(0, "backbone", backbone)
                part["score"] = score
                part["pred"] = pred
                part["params"] = chosen
                out.append(part)
    if not out:
        return SCORE_SCHEMA.empty_table().to_pandas()
    return pd.concat(out, ignore_index=True)


def cross_validate(
    X: np.ndarray, meta: pd.DataFrame, split: pd.DataFrame, selectors: dict[str, dict],
    ks: list[int], classifiers: dict[str, dict], seed: int = 0, preset: str = "default",
    search: dict | None = None, prefilter: dict | None = None,
    *, backbone: str = "", layer: str = "",
) -> pd.DataFrame:
    """``select`` + ``classify`` in memory: per-frame test scores of every selector x k x
    classifier, each selector fitted per fold on the training subjects only."""
    from neopain.learn.select import rank_folds_array

    subjects = meta["subject_id"].to_numpy(dtype=object)
    y = meta["y"].to_numpy()
    frames = []
    for sname, sparams in selectors.items():
        ranks = rank_folds_array(X, subjects, y, split, sname, dict(sparams or {}),
                                 max(ks), prefilter=prefilter).to_pandas()
        frames.append(score_folds(X, meta, split, ranks, ks, classifiers, seed, preset,
                                  search, backbone=backbone, layer=layer))
    return pd.concat(frames, ignore_index=True)
