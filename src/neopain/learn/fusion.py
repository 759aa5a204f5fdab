"""Fusion of selected deep features with optical-strain features (the paper's Table 7).

Per configuration (backbone, layer, protocol, selector) and per fold, on the
fold's *training subjects only* (no test row ever reaches a selector, imputer,
scaler or classifier):

* **deep** -- the top ``k`` deep features of the fold's ranking from the
  ``select`` stage (``k`` in ``fusion.k``, default 15 as in the paper);
* **strain** -- each keyframe carries its video's strain features
  (:mod:`neopain.features.strain`, 25 per video). A video without strain features (fewer
  than two ok frames) gets, per feature, the median over the fold's *training
  videos*. The top ``fusion.strain_k`` (default 5, as the paper's five) are chosen
  by the same selector fitted on the training videos, one row per video (a
  video's keyframes share one strain vector); ``strain_k: null`` keeps all;
* **fused** -- the two concatenated: ``k`` deep + ``strain_k`` strain features;
* with facial actions (``actions.enabled``, :mod:`neopain.features.actions`): **actions** -- the
  video-level action statistics, per keyframe like strain (imputed and the top
  ``fusion.actions_k``, default 10, selected on the training videos), and
  **deep+strain+actions** -- the three concatenated.

Each feature set goes through :func:`neopain.learn.classify.score_folds` with the
configured classifiers and preset, so the three are scored exactly as the deep
features of Table 5 are. The scores follow ``SCORE_SCHEMA`` plus a ``features``
column (``deep``, ``strain``, ``fused``); ``k`` is the number of features the
model saw (``k + strain_k`` for fused).

:func:`table7` picks, per backbone x layer x protocol and feature set, the best
configuration by frame accuracy (:func:`neopain.learn.evaluate.table7`) and adds
two-sided DeLong p-values between the three chosen configurations on the same
pooled test rows (:func:`delong_pairs`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from neopain.learn.classify import SCORE_SCHEMA, score_folds
from neopain.learn.evaluate import config_label, config_rows
from neopain.learn.evaluate import table7 as _table7
from neopain.learn.metrics import CONFIG, EXTRA, video_level
from neopain.learn.split import iter_folds

log = logging.getLogger(__name__)

FEATURE_SETS = ("deep", "strain", "fused")
ACTION_SETS = ("actions", "deep+strain+actions")  #: with facial actions (issue 15)
ALL_SETS = FEATURE_SETS + ACTION_SETS
FUSION_SCHEMA = SCORE_SCHEMA.append(pa.field("features", pa.string()))


def keyframe_strain(meta: pd.DataFrame, strain: pd.DataFrame, names: Sequence[str],
                    where: str = "strain table") -> np.ndarray:
    """(n_rows, n_strain) matrix: each row of ``meta`` gets its video's strain features."""
    s = strain.set_index("video_id")
    missing = sorted(set(meta["video_id"]) - set(s.index))
    if missing:
        raise ValueError(f"{where}: no strain features for video(s) {missing[:5]}")
    return s.loc[meta["video_id"].to_numpy(), list(names)].to_numpy(np.float64)


def impute_from_training(S: np.ndarray, train: np.ndarray, video_ids: np.ndarray
                         ) -> np.ndarray:
    """NaN -> per-column median over the training *videos* (0 when all are NaN)."""
    out = S.copy()
    if not np.isnan(out).any():
        return out
    _, first = np.unique(video_ids[train], return_index=True)
    per_video = S[train][first]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN column: NaN, then 0
        med = (np.nanmedian(per_video, axis=0) if len(per_video)
               else np.full(S.shape[1], np.nan))
    med = np.where(np.isfinite(med), med, 0.0)
    bad = np.isnan(out)
    out[bad] = np.broadcast_to(med, out.shape)[bad]
    return out


def rank_strain(S: np.ndarray, y: np.ndarray, train: np.ndarray, video_ids: np.ndarray,
                selector: str, params: Mapping, strain_k: int | None) -> np.ndarray | None:
    """Column indices of the strain features kept for one fold (None: cannot fit)."""
    m = S.shape[1]
    if strain_k is None or int(strain_k) >= m:
        return np.arange(m)
    from neopain.learn.select import make_selector

    _, first = np.unique(video_ids[train], return_index=True)
    Sv, yv = S[train][first], y[train][first]
    if len(yv) < 2 or len(np.unique(yv)) < 2:
        return None
    # ReliefF uses fewer neighbours when a class has fewer training videos (as Weka)
    sel = make_selector(selector, int(strain_k), **dict(params or {})).fit(Sv, yv)
    return np.asarray(sel.ranking_[: int(strain_k)])


def fusion_scores(
    X: np.ndarray, meta: pd.DataFrame, split: pd.DataFrame, rankings: pd.DataFrame,
    strain: np.ndarray, ks: Sequence[int], strain_k: int | None, selector: str,
    selector_params: Mapping, classifiers: Mapping[str, Mapping], seed: int = 0,
    preset: str = "paper", search: Mapping | None = None,
    actions: np.ndarray | None = None, actions_k: int | None = 10,
    *, backbone: str = "", layer: str = "",
) -> pd.DataFrame:
    """Per-frame test scores of deep, strain and fused features (see the module doc).

    ``X`` (n, D) deep features, ``meta`` video_id/subject_id/frame/y aligned with it,
    ``rankings`` the select stage's per-fold ranking, ``strain`` (n, m) per-keyframe
    strain features (NaN where a video has none); ``actions`` (n, a) per-keyframe
    video-level action statistics (NaN where a video has none) adds :data:`ACTION_SETS`.
    ``backbone`` and ``layer`` name the deep feature table in every row.
    """
    ks = sorted({int(k) for k in ks})
    video_ids = meta["video_id"].to_numpy(dtype=object)
    y = meta["y"].to_numpy()
    out = []
    for fold, tr, te in iter_folds(split, meta["subject_id"].to_numpy()):
        rank = rankings[rankings["fold"] == fold].sort_values("rank")["feature"].to_numpy()
        if not te.any() or not tr.any() or len(rank) == 0:
            log.warning("fold %s: skipped (%s)", fold, "no test rows" if not te.any()
                        else "no training rows" if not tr.any() else "no deep ranking")
            continue
        S = impute_from_training(strain, tr, video_ids)
        keep = rank_strain(S, y, tr, video_ids, selector, selector_params, strain_k)
        if keep is None:
            log.warning("fold %s: strain selector not fitted (one class among the training "
                        "videos); fold skipped", fold)
            continue
        keep_a = np.zeros(0, int)
        if actions is not None:
            Av = impute_from_training(actions, tr, video_ids)
            keep_a = rank_strain(Av, y, tr, video_ids, selector, selector_params, actions_k)
            if keep_a is None:
                log.warning("fold %s: actions selector not fitted; fold skipped", fold)
                continue
        deep_cols = rank[: max(ks)]
        K, ns, na = len(deep_cols), len(keep), len(keep_a)
        blocks = [X[:, deep_cols].astype(np.float64), S[:, keep]]
        if actions is not None:
            blocks.append(Av[:, keep_a])
        Xf = np.hstack(blocks)
        split_f = split[split["fold"] == fold]

        def ranking(cols):
            return pd.DataFrame({"fold": fold, "rank": np.arange(len(cols)),
                                 "feature": np.asarray(cols, int), "selector": selector})

        runs = [("deep", ranking(np.arange(K)), [min(k, K) for k in ks]),
                ("strain", ranking(K + np.arange(ns)), [ns])]
        for k in ks:
            runs.append(("fused", ranking(np.r_[np.arange(min(k, K)), K + np.arange(ns)]),
                         [min(k, K) + ns]))
        if actions is not None:
            runs.append(("actions", ranking(K + ns + np.arange(na)), [na]))
            for k in ks:
                runs.append(("deep+strain+actions",
                             ranking(np.r_[np.arange(min(k, K)), K + np.arange(ns + na)]),
                             [min(k, K) + ns + na]))
        for name, rk, kk in runs:
            part = score_folds(Xf, meta, split_f, rk, sorted(set(kk)), dict(classifiers),
                               seed, preset=preset, search=dict(search or {}),
                               backbone=backbone, layer=layer)
            part["features"] = name
            out.append(part)
        log.info("fold %s: %d deep + %d strain features, %d train / %d test rows", fold, K,
                 ns, int(tr.sum()), int(te.sum()))
    if not out:
        return FUSION_SCHEMA.empty_table().to_pandas()
    return pd.concat(out, ignore_index=True)


# ----------------------------------------------------------------------------
# Table 7
# ----------------------------------------------------------------------------
def _shown(row: pd.Series) -> str:
    return f"{config_label(row['selector'], row['k'])} {row['classifier']}"


def delong_pairs(scores: pd.DataFrame, t7: pd.DataFrame, aggregation: str = "mean",
                 quantile: float = 0.9) -> pd.DataFrame:
    """DeLong tests between the Table 7 configurations of each backbone x layer x
    protocol (strain vs deep, strain vs fused, deep vs fused), frame and video level;
    clustered by subject (:func:`neopain.learn.clustered.clustered_delong`)."""
    from neopain.learn.clustered import clustered_delong

    rows = []
    groups = ["backbone", "layer", "protocol"]
    for key, t in (t7.groupby(groups, sort=True) if len(t7) else []):
        sel = dict(zip(groups, key))
        part = scores
        for g, v in sel.items():
            part = part[part[g] == v]
        chosen = {r["features"]: r for _, r in t.iterrows()}
        for a, b in (("strain", "deep"), ("strain", "fused"), ("deep", "fused"),
                     ("actions", "deep"), ("actions", "fused"),
                     ("deep+strain+actions", "fused"), ("deep+strain+actions", "deep")):
            if a not in chosen or b not in chosen:
                continue
            pa_, pb_ = (config_rows(part, chosen[a], CONFIG + EXTRA),
                        config_rows(part, chosen[b], CONFIG + EXTRA))
            for level in ("frame", "video"):
                if level == "video":
                    da, db = (video_level(pa_, aggregation, quantile),
                              video_level(pb_, aggregation, quantile))
                    ids = ["video_id", "fold", "subject_id"]
                else:
                    da, db, ids = pa_, pb_, ["video_id", "frame", "fold", "subject_id"]
                j = da.merge(db, on=ids, suffixes=("_a", "_b"))
                if j.empty or j["y_a"].nunique() < 2 or j["subject_id"].nunique() < 2:
                    continue
                res = clustered_delong(j["y_a"].to_numpy(), j["score_a"].to_numpy(),
                                       j["score_b"].to_numpy(), j["subject_id"].to_numpy())
                res.pop("n_subjects")
                rows.append({**sel, "level": level, "a": a, "b": b,
                             "config_a": _shown(chosen[a]), "config_b": _shown(chosen[b]),
                             "n": len(j), **res})
    cols = groups + ["level", "a", "b", "config_a", "config_b", "n", "auc_a", "auc_b", "diff",
                     "se", "z", "p"]
    return pd.DataFrame(rows, columns=cols)


def table7(metrics: pd.DataFrame, scores: pd.DataFrame, aggregation: str = "mean",
           quantile: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, delong)``: the best deep / strain / fused configuration per backbone x
    layer x protocol (frame accuracy, as Table 5) with columns ``p_vs_strain``,
    ``p_vs_deep``, ``p_vs_fused`` (frame-level DeLong p of the row's configuration vs
    that feature set's; NaN on the diagonal), and every DeLong test."""
    parts = []
    groups = metrics.groupby(["backbone", "layer"], sort=True) if len(metrics) else []
    for (b, layer), m in groups:
        t = _table7(m, "features", ALL_SETS)
        t.insert(0, "layer", layer)
        t.insert(0, "backbone", b)
        parts.append(t)
    t7 = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["backbone", "layer", "protocol", "features", "selector", "k", "classifier"])
    dl = delong_pairs(scores, t7, aggregation, quantile)
    frame = dl[dl["level"] == "frame"]
    present = set(t7["features"]) if len(t7) else set()
    for other in FEATURE_SETS + tuple(a for a in ACTION_SETS if a in present):
        vals = []
        for _, r in t7.iterrows():
            hit = frame[(frame["backbone"] == r["backbone"]) & (frame["layer"] == r["layer"])
                        & (frame["protocol"] == r["protocol"])
                        & (((frame["a"] == r["features"]) & (frame["b"] == other))
                           | ((frame["b"] == r["features"]) & (frame["a"] == other)))]
            vals.append(float(hit["p"].iloc[0]) if len(hit) else np.nan)
        t7[f"p_vs_{other}"] = vals
    return t7, dl
