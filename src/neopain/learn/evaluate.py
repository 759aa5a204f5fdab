"""Metrics at frame and video level, subject-bootstrap CIs, DeLong, the paper's tables.

Test predictions of all folds of a protocol are pooled (each frame is tested
exactly once in ``loso``/``group_kfold``, in one fold for ``holdout``) and
scored per configuration (backbone, layer, protocol, selector, k, classifier):

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

:func:`delong_test` compares the AUCs of two score vectors on the same test
rows (DeLong, DeLong & Clarke-Pearson 1988, with the fast midrank algorithm of
Sun & Xu 2014): two-sided p-value of the normal statistic.

Tables (the choice of the best configuration is made on the test results, as
in the paper: optimistic; every configuration is in the metrics table):

* :func:`table5` -- per backbone x layer x protocol, the configuration with the
  best frame-level accuracy (ties: AUC, then smallest k, then name order),
  with frame and video accuracy/AUC and their CIs;
* :func:`table6` -- the same chosen on video-level accuracy;
* :func:`table7` -- fusion: per protocol and feature set (e.g. ``deep``,
  ``strain``, ``fused``), the best configuration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

CONFIG = ["backbone", "layer", "protocol", "selector", "k", "classifier"]
#: optional configuration column: the feature set (Table 7: deep, strain, fused)
EXTRA = ["features"]
AGGREGATIONS = ("mean", "median", "max", "quantile")
CI_METRICS = ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity", "f1")
#: a percentile bootstrap over fewer subjects than this gives no usable interval: the
#: report prints such intervals as "n/a (too few subjects)" and draws no ROC band
MIN_SUBJECTS_CI = 10
#: metrics of Tables 5-7, each with its CI, at frame and video level
TABLE_METRICS = ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity")


# ----------------------------------------------------------------------------
# point metrics
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# DeLong
# ----------------------------------------------------------------------------
def _midrank(x):
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = x.size
    ranks = np.empty(n)
    # midranks of runs of equal values (1-based)
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    mid = (starts + ends + 1) / 2.0
    ranks_sorted = np.repeat(mid, ends - starts)
    ranks[order] = ranks_sorted
    return ranks


def delong_components(y, scores):
    """AUCs and DeLong covariance of the rows of ``scores`` (k x n) for labels ``y``.

    Sun & Xu (2014): placement values from midranks of the positives, the
    negatives and all rows, O(k n log n).
    """
    y = np.asarray(y).astype(int)
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = S[:, y == 1], S[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes in y")
    k = S.shape[0]
    tx = np.array([_midrank(r) for r in pos])
    ty = np.array([_midrank(r) for r in neg])
    tz = np.array([_midrank(r) for r in np.hstack([pos, neg])])
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n          # placement of each positive among negatives
    v10 = 1.0 - (tz[:, m:] - ty) / m    # placement of each negative among positives
    sx = np.cov(v01) if k > 1 else np.array([[np.var(v01, ddof=1)]])
    sy = np.cov(v10) if k > 1 else np.array([[np.var(v10, ddof=1)]])
    cov = np.atleast_2d(sx) / m + np.atleast_2d(sy) / n
    return auc, cov


def delong_test(y, score_a, score_b) -> dict[str, float]:
    """Two-sided DeLong test of AUC(a) == AUC(b) on the same test rows."""
    auc, cov = delong_components(y, np.vstack([score_a, score_b]))
    diff = auc[0] - auc[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 0:
        z, p = (0.0, 1.0) if diff == 0 else (np.inf * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = 2.0 * stats.norm.sf(abs(z))
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": float(diff),
            "se": float(np.sqrt(max(var, 0.0))), "z": float(z), "p": float(p)}


# ----------------------------------------------------------------------------
# metrics tables
# ----------------------------------------------------------------------------
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


def _best(metrics: pd.DataFrame, level: str, groups: list[str],
          allow_constant: bool = False) -> pd.DataFrame:
    """Per group, the best non-constant configuration at ``level`` (constant predictors,
    which answer one class for every row, are never chosen: see :func:`constant_only`)."""
    part = metrics[metrics["level"] == level].copy()
    if "constant" in part.columns and not allow_constant:
        part = part[~part["constant"].astype(bool)]
    part["_acc"] = part["accuracy"].fillna(-1)
    part["_auc"] = part["auc"].fillna(-1)
    part = part.sort_values(groups + ["_acc", "_auc", "k", "selector", "classifier"],
                            ascending=[True] * len(groups) + [False, False, True, True, True])
    return part.drop_duplicates(groups).drop(columns=["_acc", "_auc"])


def _ci_cell(r, metric):
    lo, hi = r.get(f"{metric}_lo", np.nan), r.get(f"{metric}_hi", np.nan)
    return (float(lo) if lo is not None else np.nan, float(hi) if hi is not None else np.nan)


def _best_table(metrics: pd.DataFrame, choose_level: str, groups: list[str],
                allow_constant: bool = False) -> pd.DataFrame:
    other = "video" if choose_level == "frame" else "frame"
    best = _best(metrics, choose_level, groups, allow_constant)
    config = [c for c in CONFIG + EXTRA if c in metrics.columns]
    idx = metrics[metrics["level"] == other].set_index(config)
    rows = []
    for _, r in best.iterrows():
        key = tuple(r[c] for c in config)
        o = idx.loc[key] if key in idx.index else None
        levels = {choose_level: r, other: o}
        row = {g: r[g] for g in groups}
        row["selector"], row["k"] = r["selector"], int(r["k"])
        row["classifier"] = r["classifier"]
        for lv in ("frame", "video"):
            src = levels[lv]
            for metric in TABLE_METRICS:
                if src is None:
                    row[f"{lv}_{metric}"] = np.nan
                    row[f"{lv}_{metric}_lo"] = row[f"{lv}_{metric}_hi"] = np.nan
                    continue
                row[f"{lv}_{metric}"] = src.get(metric, np.nan)
                row[f"{lv}_{metric}_lo"], row[f"{lv}_{metric}_hi"] = _ci_cell(src, metric)
        row["n_frames"] = int(levels["frame"]["n"]) if levels["frame"] is not None else 0
        row["n_videos"] = int(levels["video"]["n"]) if levels["video"] is not None else 0
        row["n_subjects"] = int(r["n_subjects"])
        o_const = bool(o["constant"]) if o is not None and "constant" in o.index else False
        row[f"{other}_constant"] = o_const   # the chosen level is never constant
        rows.append(row)
    cols = (groups + ["selector", "k", "classifier"]
            + [f"{lv}_{m}{s}" for lv in ("frame", "video") for m in TABLE_METRICS
               for s in ("", "_lo", "_hi")]
            + ["n_frames", "n_videos", "n_subjects", f"{other}_constant"])
    return pd.DataFrame(rows, columns=cols)


def constant_only(metrics: pd.DataFrame, level: str,
                  groups: tuple[str, ...] = ("backbone", "layer", "protocol")) -> list[tuple]:
    """Groups in which every configuration is a constant predictor at ``level`` (so no
    best is chosen for them); reported in the tables' notes."""
    part = metrics[metrics["level"] == level]
    if "constant" not in part.columns or part.empty:
        return []
    allc = part.groupby(list(groups), sort=True)["constant"].all()
    return [k if isinstance(k, tuple) else (k,) for k, v in allc.items() if v]


def table5(metrics: pd.DataFrame, allow_constant: bool = False) -> pd.DataFrame:
    """Best configuration per backbone x layer x protocol, chosen on frame accuracy
    (``allow_constant``: for a method with a single configuration, nothing to choose)."""
    return _best_table(metrics, "frame", ["backbone", "layer", "protocol"], allow_constant)


def table6(metrics: pd.DataFrame) -> pd.DataFrame:
    """Best configuration per backbone x layer x protocol, chosen on video accuracy."""
    return _best_table(metrics, "video", ["backbone", "layer", "protocol"])


def table7(metrics: pd.DataFrame, feature_col: str = "features",
           order: tuple[str, ...] = ("deep", "strain", "fused")) -> pd.DataFrame:
    """Fusion table: per protocol and feature set (``feature_col``: deep alone, strain
    alone, fused), the best configuration by frame accuracy."""
    if feature_col not in metrics.columns:
        raise ValueError(f"table7 needs a {feature_col!r} column naming the feature set")
    t = _best_table(metrics, "frame", ["protocol", feature_col])
    rank = {name: i for i, name in enumerate(order)}
    t["_o"] = t[feature_col].map(lambda v: rank.get(v, len(rank)))
    t = t.sort_values(["protocol", "_o", feature_col]).drop(columns="_o")
    return t.reset_index(drop=True)


def delong_table(scores: pd.DataFrame, metrics: pd.DataFrame, aggregation: str = "mean",
                 quantile: float = 0.9, a: str = "relieff", b: str = "su") -> pd.DataFrame:
    """DeLong test of the best ``a``-selector vs the best ``b``-selector configuration
    (by frame accuracy, as Table 5) per backbone x layer x protocol x level; subject-
    clustered (:func:`neopain.learn.clustered.clustered_delong`): subjects, not frames, are the
    independent units."""
    from neopain.learn.clustered import clustered_delong

    groups = ["backbone", "layer", "protocol"]
    rows = []
    levels = {"frame": scores, "video": video_level(scores, aggregation, quantile)}
    for lv, df in levels.items():
        m = metrics[(metrics["level"] == "frame")]
        best_a = _best(m[m["selector"] == a], "frame", groups).set_index(groups)
        best_b = _best(m[m["selector"] == b], "frame", groups).set_index(groups)
        for key in best_a.index.intersection(best_b.index):
            ra, rb = best_a.loc[key], best_b.loc[key]
            sel = dict(zip(groups, key))
            part = df
            for g, v in sel.items():
                part = part[part[g] == v]
            id_cols = ["video_id"] if lv == "video" else ["video_id", "frame"]
            pa_ = part[(part.selector == a) & (part.k == ra["k"])
                       & (part.classifier == ra["classifier"])]
            pb_ = part[(part.selector == b) & (part.k == rb["k"])
                       & (part.classifier == rb["classifier"])]
            j = pa_.merge(pb_, on=id_cols + ["fold", "subject_id"], suffixes=("_a", "_b"))
            if j.empty or j["y_a"].nunique() < 2 or j["subject_id"].nunique() < 2:
                continue
            t = clustered_delong(j["y_a"].to_numpy(), j["score_a"].to_numpy(),
                                 j["score_b"].to_numpy(), j["subject_id"].to_numpy())
            rows.append({**sel, "level": lv,
                         "config_a": f"{config_label(a, ra['k'])} {ra['classifier']}",
                         "config_b": f"{config_label(b, rb['k'])} {rb['classifier']}",
                         "n": len(j), **t})
    cols = groups + ["level", "config_a", "config_b", "n", "n_subjects", "auc_a", "auc_b",
                     "diff", "se", "z", "p"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------
# figures and Markdown
# ----------------------------------------------------------------------------
def plot_roc(curves: list[tuple], path, title: str, n_boot: int = 200, seed: int = 0,
             level: float = 0.95) -> None:
    """ROC curves into a PNG (matplotlib Agg). Each curve is (label, y, score) or
    (label, y, score, subjects); with subjects, a shaded pointwise ``level`` band from a
    subject bootstrap (:func:`neopain.learn.clustered.roc_band`) is drawn under the curve."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from neopain.learn.clustered import roc_band

    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    for curve in curves:
        label, y, s = curve[:3]
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            line, = ax.plot(fpr, tpr, lw=1.6, label=label)
            if len(curve) > 3 and n_boot:
                g, lo, hi = roc_band(y, s, curve[3], n_boot, seed, level)
                if not np.isnan(lo).all():
                    ax.fill_between(g, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="chance (AUC 0.5)")
    ax.set(xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", xlim=(0, 1), ylim=(0, 1.01), title=title)
    # long labels (n, positives, AUC [CI]) go below the axes, never over the curves
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize=6.5, frameon=False)
    fig.tight_layout()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def table_roc_curves(scores: pd.DataFrame, table: pd.DataFrame, aggregation: str = "mean",
                     quantile: float = 0.9) -> list[tuple]:
    """Per-recording ROC data of every row of a results table (Table 5 or 6): one curve per
    chosen configuration, labelled with backbone, layer, protocol, n, positives and AUC."""
    out = []
    for _, row in table.iterrows():
        part = scores[(scores.backbone == row["backbone"]) & (scores.layer == row["layer"])
                      & (scores.protocol == row["protocol"])]
        label, *rest = roc_curves_for(part, row, aggregation, quantile)[1]
        name = f"{row['backbone']} {row['layer']} ({row['protocol']}), " \
               f"{config_label(row['selector'], row['k'])} {row['classifier']}"
        out.append((f"{name}: {label}", *rest))
    return out


def roc_curves_for(scores: pd.DataFrame, best_row: pd.Series, aggregation: str = "mean",
                   quantile: float = 0.9) -> list[tuple]:
    """Frame- and video-level ROC data (label, y, score, subjects) of one Table 5 row's
    configuration; the label names the unit, n, positives, AUC and its CI."""
    part = scores[(scores.selector == best_row["selector"]) & (scores.k == int(best_row["k"]))
                  & (scores.classifier == best_row["classifier"])]
    out = []
    for lv, df in (("frame", part), ("video", video_level(part, aggregation, quantile))):
        auc, lo, hi = (best_row.get(f"{lv}_auc"), best_row.get(f"{lv}_auc_lo"),
                       best_row.get(f"{lv}_auc_hi"))
        unit = "keyframes" if lv == "frame" else "recordings"
        y = df["y"].to_numpy()
        label = (f"per {'keyframe' if lv == 'frame' else 'recording'} ({len(y)} {unit}, "
                 f"{int((y == 1).sum())} positive): AUC "
                 + ("n/a" if auc is None or pd.isna(auc) else f"{auc:.3f}"))
        n_subj = df["subject_id"].nunique()
        if n_subj < MIN_SUBJECTS_CI:
            label += ", CI n/a (too few subjects)"
            out.append((label, y, df["score"].to_numpy()))     # no band either
            continue
        if lo is not None and not pd.isna(lo):
            label += f" [{lo:.3f}, {hi:.3f}]"
        out.append((label, y, df["score"].to_numpy(), df["subject_id"].to_numpy()))
    return out


def per_subject(scores: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per-subject test results of each Table 5 configuration, by subject x label.

    One row per (backbone, layer, protocol, subject, label ``y``): a subject usually has
    recordings of both classes, so each class gets its own row with the number of its
    recordings and keyframes, their mean frame score and the share of its frames (and of
    its videos, by majority vote) classified correctly.
    """
    rows = []
    for _, r in best.iterrows():
        part = config_rows(scores, r)
        videos = part.groupby(["subject_id", "y", "video_id"], sort=True)["pred"].mean()
        video_ok = ((videos >= 0.5).astype(int) == videos.index.get_level_values("y"))
        for (subj, y), g in part.groupby(["subject_id", "y"], sort=True):
            rows.append({
                "backbone": r["backbone"], "layer": r["layer"], "protocol": r["protocol"],
                "configuration": f"{config_label(r['selector'], r['k'])} {r['classifier']}",
                "subject_id": subj,
                "y": int(y), "n_videos": int(g["video_id"].nunique()), "n_frames": int(len(g)),
                "mean_score": float(g["score"].mean()),
                "frame_accuracy": float((g["pred"] == g["y"]).mean()),
                "video_accuracy": float(video_ok.loc[(subj, y)].mean()),
            })
    cols = ["backbone", "layer", "protocol", "configuration", "subject_id", "y", "n_videos",
            "n_frames", "mean_score", "frame_accuracy", "video_accuracy"]
    return pd.DataFrame(rows, columns=cols)


def config_rows(scores: pd.DataFrame, r: pd.Series, keys=CONFIG) -> pd.DataFrame:
    """The score rows of one table row's configuration (equal in every column of ``keys``
    the row has: Tables 5-7 carry backbone, layer, protocol, selector, k, classifier)."""
    mask = np.ones(len(scores), bool)
    for c in keys:
        if c in r.index:
            mask &= (scores[c] == r[c]).to_numpy()
    return scores[mask]


def config_label(selector, k) -> str:
    """A configuration's selector as the tables show it: ``relieff(15)``."""
    return f"{selector}({int(k)})"


def with_selector_label(table: pd.DataFrame) -> pd.DataFrame:
    """A Table 5/6/7 for display: ``selector`` and ``k`` shown as one column,
    ``relieff(15)`` (the Parquet tables keep them apart)."""
    if "k" not in table.columns:
        return table
    out = table.drop(columns="k")
    out["selector"] = [config_label(s, k) for s, k in zip(table["selector"], table["k"])]
    return out


def per_video(scores: pd.DataFrame, best: pd.DataFrame, aggregation: str = "mean",
              quantile: float = 0.9) -> pd.DataFrame:
    """Per-video predictions of each Table 5 configuration: video, subject, label ``y``,
    aggregated score, predicted class (majority vote), correct, keyframes, fold."""
    frames = []
    for _, r in best.iterrows():
        part = config_rows(scores, r)
        if part.empty:
            continue
        v = video_level(part, aggregation, quantile)
        n = part.groupby("video_id").size()
        v["n_frames"] = v["video_id"].map(n).astype(int)
        v["configuration"] = f"{config_label(r['selector'], r['k'])} {r['classifier']}"
        frames.append(v)
    cols = ["backbone", "layer", "protocol", "configuration", "fold", "video_id",
            "subject_id", "y", "score", "pred", "correct", "n_frames"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["correct"] = out["pred"] == out["y"]
    return out[cols].sort_values(["backbone", "layer", "protocol", "subject_id",
                                  "video_id"]).reset_index(drop=True)


def _fmt(x) -> str:
    if isinstance(x, (float, np.floating)):
        return "n/a" if np.isnan(x) else f"{x:.4f}"
    return str(x)


def is_p_column(name: str) -> bool:
    """``p`` and ``p_...`` columns hold p-values."""
    return name == "p" or str(name).startswith("p_")


def format_p(p) -> str:
    """A p-value for people: ``< 0.001`` below one in a thousand, else three decimals."""
    if p is None or (isinstance(p, (float, np.floating)) and np.isnan(p)):
        return "n/a"
    try:
        p = float(p)
    except (TypeError, ValueError):  # a text cell in a p column ("", "n/a")
        return str(p) or "n/a"
    return "n/a" if np.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def with_ci_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Fold ``m``, ``m_lo``, ``m_hi`` into one display column ``m (95% CI)``."""
    out = df.copy()
    for col in list(df.columns):
        if f"{col}_lo" in df.columns and f"{col}_hi" in df.columns:
            out[col] = [
                _fmt(v) if pd.isna(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                for v, lo, hi in zip(df[col], df[f"{col}_lo"], df[f"{col}_hi"])]
            out = out.drop(columns=[f"{col}_lo", f"{col}_hi"])
    return out


def to_markdown(df: pd.DataFrame, title: str, notes: list[str] | None = None) -> str:
    cols = list(df.columns)
    lines = [f"# {title}", ""]
    for note in notes or []:
        lines.append(f"> {note}")
    if notes:
        lines.append("")
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(format_p(r[c]) if is_p_column(c) else _fmt(r[c])
                                       for c in cols) + " |")
    return "\n".join(lines) + "\n"
