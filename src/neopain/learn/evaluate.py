"""The paper's tables: the best configuration per backbone x layer x protocol.

The choice of the best configuration is made on the test results, as in the paper:
optimistic; every configuration is in the metrics table (:mod:`neopain.learn.metrics`).

* :func:`table5` -- per backbone x layer x protocol, the configuration with the
  best frame-level accuracy (ties: AUC, then smallest k, then name order),
  with frame and video accuracy/AUC and their CIs;
* :func:`table6` -- the same chosen on video-level accuracy;
* :func:`table7` -- fusion: per protocol and feature set (e.g. ``deep``,
  ``strain``, ``fused``), the best configuration;
* :func:`delong_table` -- the best ReliefF vs the best SU configuration.

A table row names its configuration in columns (backbone, layer, protocol, selector,
k, classifier; :func:`config_rows` finds its score rows); only the display joins
selector and k as ``relieff(15)`` (:func:`with_selector_label`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neopain.learn.metrics import CONFIG, EXTRA, video_level

#: metrics of Tables 5-7, each with its CI, at frame and video level
TABLE_METRICS = ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity")


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


#: the columns that say which selector, k and classifier made a row (with backbone, layer)
CONFIG_COLUMNS = ["selector", "k", "classifier"]


def configuration_shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table with a ``configuration`` text column, for display: the label columns it
    repeats (:data:`CONFIG_COLUMNS`) left out (the Parquet tables keep both)."""
    if "configuration" not in table.columns:
        return table
    return table.drop(columns=[c for c in CONFIG_COLUMNS if c in table.columns])


def with_selector_label(table: pd.DataFrame) -> pd.DataFrame:
    """A Table 5/6/7 for display: ``selector`` and ``k`` shown as one column,
    ``relieff(15)`` (the Parquet tables keep them apart)."""
    if "k" not in table.columns:
        return table
    out = table.drop(columns="k")
    out["selector"] = [config_label(s, k) for s, k in zip(table["selector"], table["k"])]
    return out
