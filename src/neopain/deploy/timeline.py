"""Timeline arithmetic of a prediction: segments, the smoother, epochs and their decisions.

* *segments*: maximal runs of consecutive processed frames that are all ``ok`` (a face
  tracked and scored);
* the *smoother*: a centred moving average of the calibrated probability over
  ``smooth_seconds`` (frames with ``|t - t0| <= smooth_seconds / 2``) within each
  segment, so it never bridges a tracking gap: gaps stay gaps (NaN);
* *epochs*: consecutive windows of ``epoch_seconds`` from the first frame's time (the
  last one ends one frame after the last frame), or the ``start``/``end`` seconds of a
  CSV (:func:`read_epochs`; optional ``label`` column kept). Per epoch: frames processed,
  ``n_ok``, ``coverage`` = ``n_ok / n_frames``, ``mean_probability`` (of the ok frames,
  or pooled by a video-level model), ``pain_fraction`` and the ``decision`` --
  ``mean_probability >= threshold`` -- when ``coverage >= min_coverage``, else none
  (``status`` ``insufficient``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

#: the columns of a prediction's frame table (NAME.frames.parquet)
FRAME_COLUMNS = ["video_id", "frame", "timestamp", "ok", "reason", "score", "probability",
                 "smoothed", "pred", "segment", "pspi", "yaw", "pitch", "roll"]


def segments(ok: np.ndarray) -> np.ndarray:
    """Segment id of each frame: runs of consecutive ok frames numbered 0, 1, ...; -1 for
    frames that are not ok."""
    ok = np.asarray(ok, dtype=bool)
    starts = ok & ~np.r_[False, ok[:-1]]
    seg = np.cumsum(starts) - 1
    return np.where(ok, seg, -1)


def smooth_timeline(t: np.ndarray, p: np.ndarray, ok: np.ndarray, window: float) -> np.ndarray:
    """Centred moving average of ``p`` over ``window`` seconds within each segment (see
    the module docstring); NaN where not ok."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.asarray(ok, dtype=bool) & np.isfinite(p)
    out = np.full(len(p), np.nan)
    seg = segments(ok)
    half = window / 2.0
    for s in range(seg.max() + 1 if len(seg) else 0):
        idx = np.flatnonzero(seg == s)
        ts, ps = t[idx], p[idx]
        c = np.r_[0.0, np.cumsum(ps)]
        lo = np.searchsorted(ts, ts - half - 1e-9, side="left")
        hi = np.searchsorted(ts, ts + half + 1e-9, side="right")
        out[idx] = (c[hi] - c[lo]) / (hi - lo)
    return out


def read_epochs(path: str | os.PathLike) -> pd.DataFrame:
    """Epochs from a CSV (or TSV) with columns ``start``, ``end`` (seconds) [, ``label``]
    (read by :func:`neopain.core.samples.read_sheet`: whole-line ``#`` comments)."""
    from neopain.core.samples import read_sheet

    path = Path(path)
    df = read_sheet(path, "epochs file", ("start", "end"))
    missing = [c for c in ("start", "end") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need start, end in "
                         "seconds; optional label)")
    for line, s, e in zip(df.attrs["lines"], df["start"], df["end"]):
        try:
            s, e = float(s), float(e)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: row {line}: start/end are not numbers") from None
        if not (math.isfinite(s) and math.isfinite(e) and e > s):
            raise ValueError(f"{path}: row {line}: need finite start < end, got {s}, {e}")
    out = pd.DataFrame({"start": df["start"].astype(float), "end": df["end"].astype(float)})
    if "label" in df.columns:
        out["label"] = df["label"].astype(str)
    return out.reset_index(drop=True)


def epoch_table(frames: pd.DataFrame, threshold: float, labels: tuple[str, str],
                epoch_seconds: float = 20.0, epochs: pd.DataFrame | None = None,
                min_coverage: float = 0.5, pooled=None) -> pd.DataFrame:
    """Per-epoch decisions (see the module docstring). ``pooled``: for video-level
    models, a function of the epoch's ok-frame mask giving its pooled probability
    (``mean_probability``)."""
    t = frames["timestamp"].to_numpy(np.float64)
    if epochs is None:
        if len(t):
            t0, t1 = float(t.min()), float(t.max())
            dt = float(np.median(np.diff(np.sort(t)))) if len(t) > 1 else 0.0
            n = max(1, int(math.floor((t1 - t0) / epoch_seconds)) + 1)
            starts = t0 + epoch_seconds * np.arange(n)
            # the last epoch ends with the video (after its last frame): it may be shorter
            ends = np.minimum(starts + epoch_seconds, t1 + max(dt, 1e-6))
            epochs = pd.DataFrame({"start": starts, "end": ends})
        else:
            epochs = pd.DataFrame({"start": [], "end": []})
    rows = []
    ok = frames["ok"].to_numpy(bool)
    prob = frames["probability"].to_numpy(np.float64)
    pred = frames["pred"].to_numpy("float64", na_value=np.nan)
    for i, e in epochs.reset_index(drop=True).iterrows():
        m = (t >= e["start"]) & (t < e["end"])
        mo = m & ok
        n, n_ok = int(m.sum()), int(mo.sum())
        cov = n_ok / n if n else 0.0
        mean_p = (float("nan") if not n_ok else float(pooled(mo)) if pooled is not None
                  else float(prob[mo].mean()))
        row = {"epoch": i, "start": float(e["start"]), "end": float(e["end"])}
        if "label" in epochs.columns:
            row["label"] = e["label"]
        enough = n_ok > 0 and cov >= min_coverage
        row.update({
            "n_frames": n, "n_ok": n_ok, "coverage": cov, "mean_probability": mean_p,
            "max_probability": float(prob[mo].max()) if n_ok else float("nan"),
            "pain_fraction": float(np.mean(pred[mo])) if n_ok else float("nan"),
            "decision": (int(mean_p >= threshold) if enough else None),
            "status": (labels[1] if enough and mean_p >= threshold else
                       labels[0] if enough else "insufficient"),
        })
        rows.append(row)
    cols = ["epoch", "start", "end"] + (["label"] if "label" in epochs.columns else []) + [
        "n_frames", "n_ok", "coverage", "mean_probability", "max_probability",
        "pain_fraction", "decision", "status"]
    df = pd.DataFrame(rows, columns=cols)
    df["decision"] = df["decision"].astype("Int8")
    return df
