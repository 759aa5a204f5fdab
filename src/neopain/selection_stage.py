"""The ``select`` stage: per-fold rankings fitted on training subjects only."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from .extract import feature_matrix
from .select import make_selector
from .split import fold_subjects

log = logging.getLogger(__name__)

RANK_SCHEMA = pa.schema(
    [("protocol", pa.string()), ("fold", pa.int32()), ("selector", pa.string()),
     ("rank", pa.int32()), ("feature", pa.int32()), ("score", pa.float64()),
     ("n_train", pa.int32())]
)


def rank_folds(table: pa.Table, split: pd.DataFrame, selector: str, params: dict,
               max_k: int) -> pa.Table:
    """Top-``max_k`` features of each fold, the selector fitted on training rows only."""
    X = feature_matrix(table)
    subjects = np.asarray(table.column("subject_id").to_pylist(), dtype=object)
    y = np.asarray(table.column("y").to_pylist(), dtype=np.int8)
    rows = []
    protocol = split["protocol"].iloc[0]
    for fold in sorted(split["fold"].unique()):
        train_s, _ = fold_subjects(split, fold)
        tr = np.isin(subjects, list(train_s))
        if tr.sum() < 2 or len(np.unique(y[tr])) < 2:
            log.warning("protocol %s fold %s: training rows hold %d row(s) and %d class(es); "
                        "selector not fitted, fold skipped", protocol, fold, tr.sum(),
                        len(np.unique(y[tr])))
            continue
        sel = make_selector(selector, max_k, **params).fit(X[tr], y[tr])
        top = sel.ranking_[:max_k]
        for r, f in enumerate(top):
            rows.append((protocol, int(fold), selector, r, int(f), float(sel.scores_[f]),
                         int(tr.sum())))
    df = pd.DataFrame(rows, columns=RANK_SCHEMA.names)
    return pa.Table.from_pandas(df, RANK_SCHEMA, preserve_index=False)
