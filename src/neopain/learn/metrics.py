"""Metrics at frame and video level with subject-bootstrap confidence intervals.

Score tables (:data:`neopain.learn.classify.SCORE_SCHEMA`) label their rows themselves
(backbone, layer, protocol, fold, selector, k, classifier). Test predictions of all
folds of a protocol are pooled (each frame is tested exactly once in
``loso``/``group_kfold``, in one fold for ``holdout``) and scored per configuration
(backbone, layer, protocol, selector, k, classifier):

* frame level: every keyframe is one prediction;
* video level: a video's score is the ``aggregation`` of its frames' scores
  (``mean``, ``median``, ``max`` or ``quantile``: the ``quantile``-th quantile,
  e.g. 0.9 = "top decile", of its frame scores), its predicted class the
  majority vote of its frames' predicted classes (ties: positive).

Accuracy, balanced accuracy, sensitivity, specificity, precision and F1 use the
predicted classes; AUC the scores (NaN with one class only). 95% confidence
intervals (:func:`bootstrap_ci`): percentile bootstrap over *subjects* (the
independent units), resampled with replacement, ``n_boot`` replicates, seeded;
all replicates are computed at once from per-subject confusion counts and a
subject x subject matrix of concordant (positive, negative) pairs, so 1,000
replicates cost milliseconds. A replicate in which AUC (or a rate) is undefined
is left out of that metric's interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

CONFIG = ["backbone", "layer", "protocol", "selector", "k", "classifier"]
#: optional configuration column: the feature set (Table 7: deep, strain, fused)
EXTRA = ["features"]
AGGREGATIONS = ("mean", "median", "max", "quantile")
CI_METRICS = ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity", "f1")
#: a percentile bootstrap over fewer subjects than this gives no usable interval: the
#: report prints such intervals as "n/a (too few subjects)" and draws no ROC band
MIN_SUBJECTS_CI = 10


def read_score_files(paths) -> tuple[pd.DataFrame, list[dict]]:
    """Score tables (``scores`` or ``fusion``: :data:`neopain.learn.classify.SCORE_SCHEMA`,
    labelled by their own ``backbone`` and ``layer`` columns) as one frame, and each
    file's provenance (for the evaluation's upstream record)."""
    import pyarrow.parquet as pq

    from neopain.core.provenance import read_provenance

    frames, ups = [], []
    for f in paths:
        df = pq.read_table(f).to_pandas()
        missing = [c for c in ("backbone", "layer") if c not in df.columns]
        if missing:
            raise ValueError(f"{f}: score table without the label column(s) {missing} "
                             "(written before tables labelled themselves): rerun its rule")
        frames.append(df)
        ups.append(read_provenance(f))
    return pd.concat(frames, ignore_index=True), ups


def binary_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    prec = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    # NaN scores: a model that could not be fitted (e.g. a one-class or constant training
    # part); its AUC is undefined, not an error
    finite = np.all(np.isfinite(np.asarray(score, dtype=np.float64)))
    auc = roc_auc_score(y, score) if len(np.unique(y)) == 2 and finite else float("nan")
    return {
        "n": n, "n_pos": int((y == 1).sum()),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "auc": float(auc),
        "balanced_accuracy": float(np.nanmean([sens, spec])) if n else float("nan"),
        "sensitivity": sens, "specificity": spec, "precision": prec, "f1": f1,
    }


def video_level(scores: pd.DataFrame, aggregation: str = "mean",
                quantile: float = 0.9) -> pd.DataFrame:
    """One row per video and configuration: aggregated score, majority-vote class."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown video_aggregation {aggregation!r} "
                         f"({', '.join(AGGREGATIONS)})")
    if not 0.0 <= float(quantile) <= 1.0:
        raise ValueError(f"video quantile must be in [0, 1], got {quantile!r}")
    keys = CONFIG + EXTRA + ["fold", "video_id", "subject_id"]
    keys = [k for k in keys if k in scores.columns]
    g = scores.groupby(keys, sort=True)
    if aggregation == "quantile":
        agg = g.agg(y=("y", "first"), vote=("pred", "mean"))
        agg["score"] = g["score"].quantile(float(quantile))
    else:
        agg = g.agg(y=("y", "first"), score=("score", aggregation), vote=("pred", "mean"))
    agg["pred"] = (agg["vote"] >= 0.5).astype(int)
    return agg.drop(columns="vote").reset_index()


# ----------------------------------------------------------------------------
# subject bootstrap
# ----------------------------------------------------------------------------
def _pair_matrix(y, score, sidx, n_subj):
    """M[a, b] = sum over positives of subject a and negatives of subject b of
    1[s_pos > s_neg] + 0.5 * 1[s_pos == s_neg]."""
    pos, neg = y == 1, y == 0
    s_neg, b_neg = score[neg], sidx[neg]
    order = np.argsort(s_neg, kind="stable")
    s_sorted, b_sorted = s_neg[order], b_neg[order]
    M = np.zeros((n_subj, n_subj))
    s_pos, a_pos = score[pos], sidx[pos]
    # for every positive: negatives strictly below count 1, equal ones 0.5;
    # accumulate per (subject of positive, subject of negative) via cumulative
    # per-subject counts over the sorted negatives
    onehot = np.zeros((s_sorted.size + 1, n_subj))
    if s_sorted.size:
        np.add.at(onehot, (np.arange(1, s_sorted.size + 1), b_sorted), 1.0)
    cum = np.cumsum(onehot, axis=0)  # cum[i] = per-subject counts of the i lowest
    lo = np.searchsorted(s_sorted, s_pos, side="left")
    hi = np.searchsorted(s_sorted, s_pos, side="right")
    contrib = cum[lo] + 0.5 * (cum[hi] - cum[lo])
    np.add.at(M, a_pos, contrib)
    return M


def bootstrap_replicates(y, pred, score, subjects, n_boot=1000, seed=0) -> dict:
    """Metric values of ``n_boot`` subject-resampled replicates (arrays of n_boot)."""
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    score = np.asarray(score, dtype=np.float64)
    uniq, sidx = np.unique(np.asarray(subjects, dtype=str), return_inverse=True)
    S = uniq.size
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, S, size=(n_boot, S))
    W = np.zeros((n_boot, S))
    np.add.at(W, (np.repeat(np.arange(n_boot), S), draws.ravel()), 1.0)
    per = np.zeros((S, 4))  # tp, tn, fp, fn per subject
    for j, mask in enumerate(((pred == 1) & (y == 1), (pred == 0) & (y == 0),
                              (pred == 1) & (y == 0), (pred == 0) & (y == 1))):
        per[:, j] = np.bincount(sidx[mask], minlength=S)
    tp, tn, fp, fn = (W @ per).T
    n_pos_s = np.bincount(sidx[y == 1], minlength=S).astype(float)
    n_neg_s = np.bincount(sidx[y == 0], minlength=S).astype(float)
    M = _pair_matrix(y, score, sidx, S)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = tp + tn + fp + fn
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        out = {
            "accuracy": (tp + tn) / n,
            "sensitivity": sens,
            "specificity": spec,
            "balanced_accuracy": np.where(np.isnan(sens), spec,
                                          np.where(np.isnan(spec), sens, (sens + spec) / 2)),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "auc": (np.einsum("bs,st,bt->b", W, M, W) / ((W @ n_pos_s) * (W @ n_neg_s))
                    if np.all(np.isfinite(score)) else np.full(n_boot, np.nan)),
        }
    return {k: np.where(np.isfinite(v), v, np.nan) for k, v in out.items()}


def bootstrap_ci(y, pred, score, subjects, n_boot=1000, seed=0, level=0.95,
                 metrics=CI_METRICS) -> dict[str, tuple[float, float]]:
    """Percentile CIs of ``metrics`` from a bootstrap over subjects."""
    reps = bootstrap_replicates(y, pred, score, subjects, n_boot, seed)
    a = (1.0 - level) / 2.0
    out = {}
    for m in metrics:
        v = reps[m][~np.isnan(reps[m])]
        out[m] = ((float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) if v.size
                  else (float("nan"), float("nan")))
    return out


def metrics_table(scores: pd.DataFrame, aggregation: str = "mean", quantile: float = 0.9,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Every configuration's metrics at frame and video level, with subject-bootstrap CIs
    (``{metric}_lo``/``{metric}_hi`` for accuracy, AUC, balanced accuracy,
    sensitivity, specificity, F1; ``n_boot=0``: no CIs)."""
    rows = []
    levels = {"frame": scores, "video": video_level(scores, aggregation, quantile)}
    config = [c for c in CONFIG + EXTRA if c in scores.columns]
    for level_name, df in levels.items():
        for cfg, part in df.groupby(config, sort=True):
            y, pred, score = (part["y"].to_numpy(), part["pred"].to_numpy(),
                              part["score"].to_numpy())
            m = binary_metrics(y, pred, score)
            row = {**dict(zip(config, cfg)), "level": level_name,
                   "n_subjects": part["subject_id"].nunique(), **m,
                   "constant": bool(np.unique(pred).size < 2)}
            if n_boot:
                ci = bootstrap_ci(y, pred, score, part["subject_id"].to_numpy(), n_boot,
                                  seed, level)
                for name, (lo, hi) in ci.items():
                    row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
            rows.append(row)
    return pd.DataFrame(rows)
