"""Metrics at frame and video level, and the paper's Table 5.

Test predictions of all folds of a protocol are pooled (each frame is tested
exactly once in ``loso``/``group_kfold``, in one fold for ``holdout``) and
scored per configuration (backbone, layer, protocol, selector, k, classifier):

* frame level: every keyframe is one prediction;
* video level: a video's score is the ``video_aggregation`` (mean, median or
  max) of its frames' scores, and its predicted class the majority vote of
  its frames' predicted classes (ties: positive).

Accuracy, balanced accuracy, sensitivity, specificity and F1 use the
predicted classes; AUC uses the scores (NaN when the test set holds one
class only).  Table 5 lists, per backbone x layer x protocol, the
configuration with the best frame-level accuracy (ties: best AUC, then the
simplest: smallest k, then name order).  As in the paper this choice is made
on the test results, so it is optimistic; the full metrics table is written
beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

CONFIG = ["backbone", "layer", "protocol", "selector", "k", "classifier"]


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
    auc = roc_auc_score(y, score) if len(np.unique(y)) == 2 else float("nan")
    return {
        "n": n, "n_pos": int((y == 1).sum()),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "auc": float(auc),
        "balanced_accuracy": float(np.nanmean([sens, spec])) if n else float("nan"),
        "sensitivity": sens, "specificity": spec, "precision": prec, "f1": f1,
    }


def video_level(scores: pd.DataFrame, aggregation: str = "mean") -> pd.DataFrame:
    if aggregation not in ("mean", "median", "max"):
        raise ValueError(f"unknown video_aggregation {aggregation!r} (mean, median, max)")
    keys = CONFIG + ["fold", "video_id", "subject_id"]
    keys = [k for k in keys if k in scores.columns]
    g = scores.groupby(keys, sort=True)
    agg = g.agg(y=("y", "first"), score=("score", aggregation), vote=("pred", "mean"))
    agg["pred"] = (agg["vote"] >= 0.5).astype(int)
    return agg.drop(columns="vote").reset_index()


def metrics_table(scores: pd.DataFrame, aggregation: str = "mean") -> pd.DataFrame:
    rows = []
    levels = {"frame": scores, "video": video_level(scores, aggregation)}
    for level, df in levels.items():
        for cfg, part in df.groupby(CONFIG, sort=True):
            m = binary_metrics(part["y"].to_numpy(), part["pred"].to_numpy(),
                               part["score"].to_numpy())
            rows.append({**dict(zip(CONFIG, cfg)), "level": level,
                         "n_subjects": part["subject_id"].nunique(), **m})
    return pd.DataFrame(rows)


def table5(metrics: pd.DataFrame) -> pd.DataFrame:
    """Best configuration per backbone x layer x protocol (see module docstring)."""
    frame = metrics[metrics["level"] == "frame"].copy()
    video = metrics[metrics["level"] == "video"].set_index(CONFIG)
    frame["_acc"] = frame["accuracy"].fillna(-1)
    frame["_auc"] = frame["auc"].fillna(-1)
    frame = frame.sort_values(
        ["backbone", "layer", "protocol", "_acc", "_auc", "k", "selector", "classifier"],
        ascending=[True, True, True, False, False, True, True, True])
    best = frame.drop_duplicates(["backbone", "layer", "protocol"])
    rows = []
    for _, r in best.iterrows():
        key = tuple(r[c] for c in CONFIG)
        v = video.loc[key] if key in video.index else None
        rows.append({
            "backbone": r["backbone"], "layer": r["layer"], "protocol": r["protocol"],
            "selector": f"{r['selector']}({int(r['k'])})", "classifier": r["classifier"],
            "frame_accuracy": r["accuracy"], "frame_auc": r["auc"], "n_frames": int(r["n"]),
            "video_accuracy": v["accuracy"] if v is not None else float("nan"),
            "video_auc": v["auc"] if v is not None else float("nan"),
            "n_videos": int(v["n"]) if v is not None else 0,
            "n_subjects": int(r["n_subjects"]),
        })
    return pd.DataFrame(rows)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "n/a" if np.isnan(x) else f"{x:.4f}"
    return str(x)


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
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
