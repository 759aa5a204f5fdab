"""Per-video optical-strain features from a strain signal (the ``gather_strain`` stage):
peaks per region and their statistics (Zamzmi et al. 2018, sec. 5.3; the signal is made by
:mod:`neopain.features.strain`).

Per region, each run of valid pairs (a "segment"; gaps end segments) is padded with one
zero at both ends, so a maximum at the first or last pair can count, and
``scipy.signal.find_peaks(x, prominence=peaks.prominence, distance=peaks.distance)`` finds
its peaks (``prominence`` 0.005 in strain units, ``distance`` 3 pairs: 1 or 2 whole-face
peaks per CK+ onset-to-apex clip, whose neutral start sits at ~0.013).  Per region five
statistics: ``n_peaks`` (count over all segments), ``peak_mean``, ``peak_max``,
``peak_std`` (of the peak heights; 0 when no peak reaches the prominence) and
``signal_mean`` (mean over all valid pairs): 5 regions x 5 = 25 features, named
``{region}_{stat}`` (:func:`feature_names`), computed by :func:`video_features`.

A video with fewer than two crops, or without any valid pair, has NaN features and the
signal's ``reason`` (``no_crops``, ``one_crop``, ``no_consecutive_pairs``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.signal import find_peaks

from neopain.features.strain import REGIONS, StrainError, signal_status

__all__ = ["NAMES_KEY", "PEAK_DEFAULTS", "STATS", "feature_names", "features_table",
           "peak_params", "segments", "signal_peaks", "table_feature_names", "video_features"]

PEAK_DEFAULTS: dict[str, Any] = {"prominence": 0.005, "distance": 3}
STATS = ("n_peaks", "peak_mean", "peak_max", "peak_std", "signal_mean")
NAMES_KEY = b"neopain.feature_names"


def feature_names() -> list[str]:
    """The 25 feature names, ``{region}_{stat}``."""
    return [f"{r}_{s}" for r in REGIONS for s in STATS]


def peak_params(peaks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`PEAK_DEFAULTS` with ``peaks`` on top (unknown names and bad values refused)."""
    out = dict(PEAK_DEFAULTS)
    for k, v in dict(peaks or {}).items():
        if k not in PEAK_DEFAULTS:
            raise ValueError(f"unknown peak parameter {k!r}; known: {', '.join(PEAK_DEFAULTS)}")
        out[k] = v
    if float(out["prominence"]) < 0 or int(out["distance"]) < 1:
        raise ValueError(f"peaks: prominence must be >= 0 and distance >= 1, got {out}")
    return out


def segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index runs of True in ``valid``."""
    v = np.r_[False, np.asarray(valid, bool), False]
    d = np.diff(v.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def signal_peaks(x: np.ndarray, valid: np.ndarray, prominence: float = 0.005,
                 distance: int = 3) -> np.ndarray:
    """Heights of the peaks of ``x`` over its valid segments (each zero-padded)."""
    heights = []
    for a, b in segments(valid):
        seg = np.r_[0.0, np.asarray(x[a:b], np.float64), 0.0]
        idx, _ = find_peaks(seg, prominence=float(prominence), distance=int(distance))
        heights.append(seg[idx])
    return np.concatenate(heights) if heights else np.zeros(0)


def video_features(signal: pa.Table | pd.DataFrame, peaks: Mapping[str, Any] | None = None,
                   status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The per-video strain features (:func:`feature_names`) of one signal table, plus
    ``n_crops``, ``n_pairs`` and ``reason``. NaN features when the reason is not ""."""
    p = peak_params(peaks)
    if status is None:
        status = signal_status(signal) if isinstance(signal, pa.Table) else {}
    df = signal.to_pandas() if isinstance(signal, pa.Table) else signal
    valid = df["valid"].to_numpy(bool) if len(df) else np.zeros(0, bool)
    n_pairs = int(valid.sum())
    reason = status.get("reason") or ("" if n_pairs else "no_consecutive_pairs")
    out: dict[str, Any] = {"n_crops": int(status.get("n_crops", len(df) + 1 if len(df) else 0)),
                           "n_pairs": n_pairs, "reason": reason}
    if reason:
        out.update({n: float("nan") for n in feature_names()})
        return out
    for r in REGIONS:
        x = df[f"strain_{r}"].to_numpy(np.float64)
        h = signal_peaks(x, valid, p["prominence"], p["distance"])
        out[f"{r}_n_peaks"] = float(h.size)
        out[f"{r}_peak_mean"] = float(h.mean()) if h.size else 0.0
        out[f"{r}_peak_max"] = float(h.max()) if h.size else 0.0
        out[f"{r}_peak_std"] = float(h.std()) if h.size else 0.0
        out[f"{r}_signal_mean"] = float(x[valid].mean())
    return out


def features_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Per-video strain features: ``video_id``, ``subject_id``, ``label``, ``y``,
    ``n_crops``, ``n_pairs``, ``reason`` and one float64 column per feature (their
    order in the schema metadata ``neopain.feature_names``)."""
    names = feature_names()
    schema = pa.schema(
        [("video_id", pa.string()), ("subject_id", pa.string()), ("label", pa.string()),
         ("y", pa.int8()), ("n_crops", pa.int32()), ("n_pairs", pa.int32()),
         ("reason", pa.string())] + [(n, pa.float64()) for n in names],
        metadata={NAMES_KEY: json.dumps(names).encode()})
    cols = {f.name: [r[f.name] for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


def table_feature_names(table: pa.Table) -> list[str]:
    """The feature names a features table records in its schema metadata."""
    meta = table.schema.metadata or {}
    if NAMES_KEY not in meta:
        raise StrainError("strain feature table without neopain.feature_names metadata")
    return list(json.loads(meta[NAMES_KEY]))
