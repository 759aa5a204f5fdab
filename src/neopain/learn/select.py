"""The ``select`` stage: per-fold feature rankings fitted on training subjects only.

The selectors reproduce Weka 3.6's rankers as scikit-learn ``SelectorMixin``s
(:mod:`neopain.learn.ranking`): :class:`~neopain.learn.relieff.ReliefF` and
:class:`~neopain.learn.su.SymmetricUncertainty`, optionally behind an ANOVA-F
:class:`~neopain.learn.prefilter.Prefiltered`. mRMR is not implemented.

``SELECTORS`` maps the workflow's selector names to the classes;
``make_selector(name, k, prefilter=None, **params)`` builds one;
``rank_folds_array`` ranks per fold on the training subjects only.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from neopain.features.tables import feature_matrix
from neopain.learn.prefilter import Prefiltered
from neopain.learn.relieff import ReliefF
from neopain.learn.split import iter_folds
from neopain.learn.su import SymmetricUncertainty

log = logging.getLogger(__name__)


SELECTORS = {"relieff": ReliefF, "su": SymmetricUncertainty}
PREFILTERS = ("none", "anova")


def make_selector(name: str, k: int, prefilter: dict | None = None, **params):
    """The selector registered as ``name`` keeping ``k`` features, with ``params``.

    ``prefilter={"method": "anova", "n_features": N}`` wraps it in
    :class:`Prefiltered` (``{"method": "none"}`` or None: no prefilter).
    """
    try:
        cls = SELECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown selector {name!r}; known selectors: {', '.join(sorted(SELECTORS))}"
        ) from None
    sel = cls(n_features_to_select=k, **params)
    method = (prefilter or {}).get("method", "none")
    if method not in PREFILTERS:
        raise ValueError(f"unknown prefilter {method!r}; known: {', '.join(PREFILTERS)}")
    if method == "anova":
        return Prefiltered(sel, int(prefilter.get("n_features", 1000)), k)
    return sel



# ----------------------------------------------------------------------------
# The ``select`` stage: per-fold rankings fitted on training subjects only
# ----------------------------------------------------------------------------
RANK_SCHEMA = pa.schema(
    [("protocol", pa.string()), ("fold", pa.int32()), ("selector", pa.string()),
     ("rank", pa.int32()), ("feature", pa.int32()), ("score", pa.float64()),
     ("n_train", pa.int32())]
)


def rank_folds_array(X: np.ndarray, subjects: np.ndarray, y: np.ndarray,
                     split: pd.DataFrame, selector: str, params: dict, max_k: int,
                     prefilter: dict | None = None, pose: np.ndarray | None = None
                     ) -> pa.Table:
    """Top-``max_k`` features of each fold, the selector fitted on training rows only.

    Test rows are never passed to the selector (its scaling ranges, neighbours
    and discretisation come from training subjects alone). ``pose`` (rows x angles or
    pose statistics): regressed out of ``X`` first, fitted on the fold's training rows
    (:func:`neopain.learn.posecontrol.residualize`).
    """
    subjects = np.asarray(subjects, dtype=object)
    y = np.asarray(y)
    rows = []
    protocol = split["protocol"].iloc[0]
    for fold, tr, _ in iter_folds(split, subjects):
        if tr.sum() < 2 or len(np.unique(y[tr])) < 2:
            log.warning("protocol %s fold %s: training rows hold %d row(s) and %d class(es); "
                        "selector not fitted, fold skipped", protocol, fold, tr.sum(),
                        len(np.unique(y[tr])))
            continue
        Xf = X
        if pose is not None:
            from neopain.learn.posecontrol import residualize
            Xf = residualize(X, pose, tr).astype(X.dtype)
        sel = make_selector(selector, max_k, prefilter=prefilter, **params).fit(Xf[tr], y[tr])
        top = sel.ranking_[:max_k]
        for r, f in enumerate(top):
            rows.append((protocol, int(fold), selector, r, int(f), float(sel.scores_[f]),
                         int(tr.sum())))
    df = pd.DataFrame(rows, columns=RANK_SCHEMA.names)
    return pa.Table.from_pandas(df, RANK_SCHEMA, preserve_index=False)


def rank_folds(table: pa.Table, split: pd.DataFrame, selector: str, params: dict,
               max_k: int, prefilter: dict | None = None, baseline: str = "none",
               pose_regression: bool = False, *, backbone: str = "", layer: str = ""
               ) -> pa.Table:
    """:func:`rank_folds_array` on a gathered feature table (subject ``baseline`` removed
    first, :mod:`neopain.features.baseline`; ``pose_regression``: the table's ``pose`` column
    regressed out per fold), its rows labelled with the table's ``backbone`` and ``layer``
    (the first two columns)."""
    from neopain.learn.posecontrol import table_pose
    X = feature_matrix(table, baseline)
    subjects = np.asarray(table.column("subject_id").to_pylist(), dtype=object)
    y = np.asarray(table.column("y").to_pylist(), dtype=np.int8)
    pose = table_pose(table, baseline) if pose_regression else None
    ranks = rank_folds_array(X, subjects, y, split, selector, params, max_k, prefilter, pose)
    n = ranks.num_rows
    return (ranks.add_column(0, "backbone", pa.array([backbone] * n, pa.string()))
            .add_column(1, "layer", pa.array([layer] * n, pa.string())))
