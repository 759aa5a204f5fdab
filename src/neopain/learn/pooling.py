"""Video-level vectors: each recording's frames pooled into one row.

A *pooling* is a list of statistics computed per feature over a video's frames
and concatenated: ``mean``, ``std`` (population), ``min``, ``max``, ``median`` and
quantiles written ``q10``, ``q90`` (any integer percent). ``[mean, std]`` on a
1,280-D table gives a 2,560-D video vector. NaN rows (frames without features)
are ignored; a video with no finite frame gets NaNs (imputed by the model's
training medians downstream). The frame-score route (frame classifiers, video
score = mean of frame scores) is the other way to reach the video level
(:mod:`neopain.learn.metrics`).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd

STATS = ("mean", "std", "min", "max", "median")
_QUANTILE = re.compile(r"^q(\d{1,2})$")


def check_pooling(stats) -> list[str]:
    """The statistics of one pooling, validated (names as in the module doc)."""
    stats = list(stats or [])
    if not stats:
        raise ValueError("a pooling needs at least one statistic")
    for s in stats:
        if s not in STATS and not _QUANTILE.match(str(s)):
            raise ValueError(f"unknown pooling statistic {s!r}; known: {', '.join(STATS)}, "
                             "q<percent> (e.g. q10, q90)")
    if len(set(stats)) != len(stats):
        raise ValueError(f"pooling {stats}: a statistic is repeated")
    return stats


def _stat(block: np.ndarray, name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if name == "mean":
            return np.nanmean(block, axis=0)
        if name == "std":
            return np.nanstd(block, axis=0)
        if name == "min":
            return np.nanmin(block, axis=0)
        if name == "max":
            return np.nanmax(block, axis=0)
        if name == "median":
            return np.nanmedian(block, axis=0)
        q = int(_QUANTILE.match(name).group(1)) / 100.0
        return np.nanquantile(block, q, axis=0)


def pool_videos(X: np.ndarray, meta: pd.DataFrame, stats) -> tuple[np.ndarray, pd.DataFrame]:
    """(video x (len(stats) * dim) matrix, one meta row per video).

    ``meta`` is aligned with ``X`` and has ``video_id``, ``subject_id`` and ``y``; the
    video rows come sorted by ``video_id`` with ``n_frames``. Feature blocks are in the
    order of ``stats``."""
    stats = check_pooling(stats)
    vids = meta["video_id"].to_numpy(dtype=str)
    order = np.argsort(vids, kind="stable")
    sv = vids[order]
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]]) if len(sv) else np.array([], int)
    ends = np.r_[starts[1:], len(sv)]
    Xs = np.asarray(X, dtype=np.float64)[order]
    out = np.empty((len(starts), len(stats) * X.shape[1]), dtype=np.float64)
    d = X.shape[1]
    for i, (a, b) in enumerate(zip(starts, ends)):
        block = Xs[a:b]
        for j, s in enumerate(stats):
            out[i, j * d:(j + 1) * d] = _stat(block, s)
    first = meta.iloc[order[starts]] if len(starts) else meta.iloc[:0]
    vmeta = pd.DataFrame({
        "video_id": sv[starts],
        "subject_id": first["subject_id"].to_numpy(dtype=str),
        "y": first["y"].to_numpy().astype(np.int8),
        "n_frames": (ends - starts).astype(np.int32),
    })
    ys = meta["y"].to_numpy()[order]
    mixed = [str(sv[a]) for a, b in zip(starts, ends) if len(np.unique(ys[a:b])) > 1]
    if mixed:
        raise ValueError(f"video {mixed[0]!r} has frames of both labels")
    return out, vmeta
