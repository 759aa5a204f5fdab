"""Classifiers on selected features, fitted per fold on training subjects only.

Each configuration is ``StandardScaler -> classifier`` on the top-``k``
features of the fold's ranking (the ranking itself was fitted on the same
fold's training subjects by the ``select`` stage).  Scores for AUC come from
``predict_proba`` (positive class) or, for the SVM, ``decision_function``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.ensemble import RandomForestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from .split import fold_subjects

log = logging.getLogger(__name__)

SCORE_SCHEMA = pa.schema(
    [
        ("protocol", pa.string()), ("fold", pa.int32()), ("selector", pa.string()),
        ("k", pa.int32()), ("classifier", pa.string()), ("video_id", pa.string()),
        ("subject_id", pa.string()), ("frame", pa.int32()), ("y", pa.int8()),
        ("score", pa.float64()), ("pred", pa.int8()),
    ]
)


def make_classifier(name: str, params: dict[str, Any], seed: int = 0):
    params = dict(params or {})
    if name == "nb":
        return GaussianNB(**params)
    if name == "knn":
        return KNeighborsClassifier(**{"n_neighbors": 1, **params})
    if name == "svm":
        return SVC(**{"kernel": "linear", "C": 1.0, **params, "random_state": seed})
    if name == "rf":
        return RandomForestClassifier(
            **{"n_estimators": 100, **params, "random_state": seed, "n_jobs": 1})
    raise ValueError(f"unknown classifier {name!r}; known: nb, knn, svm, rf")


def positive_score(model, X: np.ndarray) -> np.ndarray:
    if hasattr(model, "predict_proba") and not isinstance(model[-1], SVC):
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))
    return model.decision_function(X).astype(np.float64)


def score_folds(
    X: np.ndarray, meta: pd.DataFrame, split: pd.DataFrame, rankings: pd.DataFrame,
    ks: list[int], classifiers: dict[str, dict], seed: int = 0,
) -> pd.DataFrame:
    """Per-frame test scores for every fold x k x classifier.

    ``meta`` has columns video_id, subject_id, frame, y aligned with ``X``;
    ``rankings`` has columns fold, rank, feature (from the select stage).
    """
    out = []
    protocol = split["protocol"].iloc[0]
    selector = rankings["selector"].iloc[0] if len(rankings) else ""
    for fold in sorted(split["fold"].unique()):
        train_s, test_s = fold_subjects(split, fold)
        tr = meta["subject_id"].isin(train_s).to_numpy()
        te = meta["subject_id"].isin(test_s).to_numpy()
        rank = rankings[rankings["fold"] == fold].sort_values("rank")["feature"].to_numpy()
        if not te.any() or len(rank) == 0:
            log.warning("protocol %s fold %s: skipped (%s)", protocol, fold,
                        "no test rows" if not te.any() else "no ranking: selector not fitted")
            continue
        ytr = meta.loc[tr, "y"].to_numpy()
        for k in ks:
            cols = rank[: min(k, len(rank))]
            Xtr, Xte = X[np.ix_(tr, cols)], X[np.ix_(te, cols)]
            for cname, cparams in classifiers.items():
                model = Pipeline([("scale", StandardScaler()),
                                  ("clf", make_classifier(cname, cparams, seed))])
                model.fit(Xtr, ytr)
                score = positive_score(model, Xte)
                pred = model.predict(Xte).astype(np.int8)
                part = meta.loc[te, ["video_id", "subject_id", "frame", "y"]].copy()
                part.insert(0, "classifier", cname)
                part.insert(0, "k", k)
                part.insert(0, "selector", selector)
                part.insert(0, "fold", fold)
                part.insert(0, "protocol", protocol)
                part["score"] = score
                part["pred"] = pred
                out.append(part)
    if not out:
        return SCORE_SCHEMA.empty_table().to_pandas()
    return pd.concat(out, ignore_index=True)
