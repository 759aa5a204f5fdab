"""A per-frame pain-intensity model over the facial actions, fitted on training subjects.

The PSPI-like composite (:func:`neopain.features.actions.pspi`) is a fixed formula. This is its
learned counterpart: for every fold of a protocol, an L2 logistic regression (standardised
descriptors, ``C``) of the frames' labels (their video's label) on the ``actions/frame``
features, fitted on the fold's *training subjects' frames only*, scores the held-out
subjects' frames. Its probability is the per-frame intensity, out of fold: each frame is
scored by a model that never saw its subject. With ``pose`` (``actions.pose_regression``),
head pose is regressed out first, fitted on the same training frames.

Outputs (:func:`fold_intensity`): the frames (intensity beside ``pspi``), the per-fold
standardised coefficients (which descriptors carry the model), and a summary: frame-level
and video-level (mean over the video's frames) AUC of the intensity and of ``pspi`` over
the same frames, and their Spearman correlation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from neopain.learn.split import iter_folds


def _auc(y, s) -> float:
    y, s = np.asarray(y), np.asarray(s, np.float64)
    ok = np.isfinite(s)
    if len(np.unique(y[ok])) < 2:
        return float("nan")
    return float(roc_auc_score(y[ok], s[ok]))


def fold_intensity(X: np.ndarray, meta: pd.DataFrame, split: pd.DataFrame, names: list[str],
                   C: float = 1.0, pose: np.ndarray | None = None, audit=None
                   ) -> dict[str, pd.DataFrame]:
    """Out-of-fold per-frame intensity (module doc). ``meta``: video_id, subject_id, y,
    frame, timestamp aligned with ``X``; ``audit(fold, training_subjects)`` is called at
    every fit."""
    X = np.asarray(X, np.float64)
    subj = meta["subject_id"].to_numpy(dtype=str)
    y = meta["y"].to_numpy().astype(int)
    protocol = split["protocol"].iloc[0]
    pspi_col = names.index("pspi") if "pspi" in names else None
    frames, coefs = [], []
    for fold, tr, te in iter_folds(split, subj):
        if not te.any() or len(np.unique(y[tr])) < 2:
            continue
        if audit is not None:
            audit(int(fold), set(subj[tr]))
        Xf = X
        if pose is not None:
            from neopain.learn.posecontrol import residualize
            Xf = residualize(X, pose, tr)
        scaler = StandardScaler().fit(Xf[tr])
        model = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(Xf[tr]), y[tr])
        p = model.predict_proba(scaler.transform(Xf[te]))[:, 1]
        part = meta.loc[te, ["video_id", "subject_id", "frame", "timestamp", "y"]].copy()
        part.insert(0, "fold", int(fold))
        part.insert(0, "protocol", protocol)
        part["intensity"] = p
        part["pspi"] = X[te, pspi_col] if pspi_col is not None else np.nan
        frames.append(part)
        coefs.append({"protocol": protocol, "fold": int(fold), "n_train_frames": int(tr.sum()),
                      **dict(zip(names, model.coef_[0].tolist()))})
    fr = (pd.concat(frames, ignore_index=True) if frames else
          pd.DataFrame(columns=["protocol", "fold", "video_id", "subject_id", "frame",
                                "timestamp", "y", "intensity", "pspi"]))
    vid = fr.groupby("video_id").agg(y=("y", "first"), intensity=("intensity", "mean"),
                                     pspi=("pspi", "mean"))
    rho = (float(fr[["intensity", "pspi"]].corr(method="spearman").iloc[0, 1])
           if len(fr) > 2 else float("nan"))
    summary = pd.DataFrame([{
        "protocol": protocol, "n_frames": len(fr), "n_videos": len(vid),
        "n_subjects": int(fr["subject_id"].nunique()) if len(fr) else 0,
        "frame_auc_intensity": _auc(fr["y"], fr["intensity"]),
        "frame_auc_pspi": _auc(fr["y"], fr["pspi"]),
        "video_auc_intensity": _auc(vid["y"], vid["intensity"]),
        "video_auc_pspi": _auc(vid["y"], vid["pspi"]),
        "spearman_intensity_pspi": rho, "C": float(C), "pose_regression": pose is not None}])
    return {"frames": fr, "coefficients": pd.DataFrame(coefs), "summary": summary}


def summary_markdown(summary: pd.DataFrame, coefficients: pd.DataFrame, top: int = 6) -> str:
    """The summary and the descriptors with the largest mean |coefficient|."""
    lines = ["# Per-frame intensity model (facial actions, out of fold)", "",
             "L2 logistic regression of frame labels on the standardised actions/frame "
             "features, fitted per fold on the training subjects' frames only; each frame "
             "scored by a model that never saw its subject. PSPI-like = the fixed composite.",
             "", "| protocol | frames | videos | subjects | frame AUC model | frame AUC "
             "PSPI-like | video AUC model | video AUC PSPI-like | Spearman model~PSPI |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['protocol']} | {r['n_frames']} | {r['n_videos']} | "
                     f"{r['n_subjects']} | {r['frame_auc_intensity']:.3f} | "
                     f"{r['frame_auc_pspi']:.3f} | {r['video_auc_intensity']:.3f} | "
                     f"{r['video_auc_pspi']:.3f} | {r['spearman_intensity_pspi']:.3f} |")
    if len(coefficients):
        feats = [c for c in coefficients.columns
                 if c not in ("protocol", "fold", "n_train_frames")]
        m = coefficients[feats].mean()
        mean = m.reindex(m.abs().sort_values(ascending=False, kind="stable").index)[:top]
        lines += ["", "Largest mean standardised coefficients over folds (+: towards pain): "
                  + ", ".join(f"`{k}` {v:+.2f}" for k, v in mean.items())]
    return "\n".join(lines) + "\n"
