"""Classic texture baselines on the keyframes: uniform LBP and LTP grid histograms.

Both are computed on the grey aligned crop (224 x 224; JPEG decoded straight to
grey by libjpeg) of every keyframe -- the same rows as the deep features -- and
stored as feature tables of the deep-feature schema (backbone ``lbp`` / ``ltp``,
layer ``grid``), so they run through select / classify / evaluate unchanged.

``lbp`` -- ``skimage.feature.local_binary_pattern(grey, P, R, "uniform")``: ``P``
neighbours on a circle of radius ``R`` (bilinear interpolation, zero outside the
image), each thresholded at the centre (``g_p - g_c >= 0``); the pattern's code is
its number of ones when it is uniform (at most two 0/1 transitions around the
circle), else ``P + 1``: ``P + 2`` codes (rotation-invariant uniform, "riu2").

``ltp`` -- local ternary patterns (Tan & Triggs 2010; the LBP variant of Nanni,
Lumini & Brahnam 2010, "Local binary patterns variants as texture descriptors for
medical image analysis"), implemented here: the same circular neighbours, coded
``+1`` when ``g_p - g_c >= t``, ``-1`` when ``g_p - g_c <= -t``, else ``0``
(``t`` = ``threshold`` in grey levels, 0-255). The ternary pattern is split into
an *upper* binary pattern (bits where the code is +1) and a *lower* one (bits
where it is -1), each mapped to the riu2 codes as above. With ``t = 0`` the upper
pattern is exactly the uniform LBP (tested against scikit-image).

Descriptor: the image is cut into a ``grid`` x ``grid`` array of cells
(``numpy.array_split``: 7 x 7 cells of 32 x 32 px on a 224 crop); each cell's code
histogram is normalised to sum 1 and the cells are concatenated row by row:
``grid^2 (P + 2)`` values for LBP (490 for the defaults), ``2 grid^2 (P + 2)`` for
LTP (all upper cells, then all lower cells; 980).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from neopain.features.keyframe_crops import keyframe_rows
from neopain.features.tables import fixed_size_list

log = logging.getLogger(__name__)

METHODS = ("lbp", "ltp")
LAYER = "grid"
DEFAULTS: dict[str, dict[str, Any]] = {
    "lbp": {"P": 8, "R": 1.0, "grid": 7},
    "ltp": {"P": 8, "R": 1.0, "grid": 7, "threshold": 5.0},
}


def params_for(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of ``method`` with ``params`` on top (``enabled`` ignored)."""
    if method not in METHODS:
        raise ValueError(f"unknown texture method {method!r}; known: {', '.join(METHODS)}")
    out = dict(DEFAULTS[method])
    for k, v in dict(params or {}).items():
        if k == "enabled":
            continue
        if k not in out:
            raise ValueError(f"texture.{method}: unknown parameter {k!r}; known: "
                             f"{', '.join(out)}")
        out[k] = v
    if int(out["P"]) < 2 or float(out["R"]) <= 0 or int(out["grid"]) < 1:
        raise ValueError(f"texture.{method}: need P >= 2, R > 0, grid >= 1, got {out}")
    if method == "ltp" and float(out["threshold"]) < 0:
        raise ValueError(f"texture.ltp: threshold must be >= 0, got {out['threshold']}")
    return out


def _neighbours(img: np.ndarray, P: int, R: float) -> np.ndarray:
    """(P, H, W) grey values of the ``P`` circular neighbours of every pixel.

    Neighbour ``p`` of pixel ``(r, c)`` sits at ``(r - R sin(2 pi p / P),
    c + R cos(2 pi p / P))`` (offsets rounded to 5 decimals), bilinearly
    interpolated with zero outside the image -- scikit-image's sampling, with the
    interpolation weights taken from the absolute coordinates in its operation
    order, so ties (a neighbour equal to the centre) resolve as they do there.
    """
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape
    pad = int(np.ceil(R)) + 2
    padded = np.zeros((h + 2 * pad, w + 2 * pad))
    padded[pad:pad + h, pad:pad + w] = img
    ang = 2 * np.pi * np.arange(P, dtype=np.float64) / P
    rp = np.round(-R * np.sin(ang), 5)
    cp = np.round(R * np.cos(ang), 5)
    rows = np.arange(h, dtype=np.float64)
    cols = np.arange(w, dtype=np.float64)
    out = np.empty((P, h, w))
    for i in range(P):
        rr, cc = rows + rp[i], cols + cp[i]
        minr, maxr = np.floor(rr), np.ceil(rr)
        minc, maxc = np.floor(cc), np.ceil(cc)
        dr = (rr - minr)[:, None]
        dc = (cc - minc)[None, :]
        r0, r1 = (minr.astype(np.intp) + pad)[:, None], (maxr.astype(np.intp) + pad)[:, None]
        c0, c1 = (minc.astype(np.intp) + pad)[None, :], (maxc.astype(np.intp) + pad)[None, :]
        top = (1 - dc) * padded[r0, c0] + dc * padded[r0, c1]
        bottom = (1 - dc) * padded[r1, c0] + dc * padded[r1, c1]
        out[i] = (1 - dr) * top + dr * bottom
    return out


def riu2(bits: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform codes of (P, H, W) 0/1 patterns: the number of ones
    when there are at most two 0/1 transitions around the circle, else ``P + 1``."""
    bits = np.asarray(bits, dtype=np.int16)
    P = bits.shape[0]
    transitions = (bits != np.roll(bits, -1, axis=0)).sum(axis=0)
    ones = bits.sum(axis=0)
    return np.where(transitions <= 2, ones, P + 1).astype(np.int16)


def lbp_codes(grey: np.ndarray, P: int = 8, R: float = 1.0) -> np.ndarray:
    """Uniform (riu2) LBP codes, scikit-image's ``local_binary_pattern(..., "uniform")``."""
    from skimage.feature import local_binary_pattern

    return local_binary_pattern(np.asarray(grey, dtype=np.uint8), int(P), float(R),
                                method="uniform").astype(np.int16)


def ltp_codes(grey: np.ndarray, P: int = 8, R: float = 1.0, threshold: float = 5.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(upper, lower)`` riu2 codes of the local ternary pattern with threshold ``t``."""
    g = np.asarray(grey, dtype=np.float64)
    diff = _neighbours(g, int(P), float(R)) - g[None]
    t = float(threshold)
    return riu2(diff >= t), riu2(diff <= -t)


def grid_histograms(codes: np.ndarray, n_codes: int, grid: int = 7) -> np.ndarray:
    """Concatenated per-cell histograms (each sums to 1) of a ``grid`` x ``grid`` split."""
    h, w = codes.shape
    if grid > min(h, w):
        raise ValueError(f"grid {grid} is finer than the {h}x{w} image")
    out = []
    for rows in np.array_split(np.arange(h), grid):
        for cols in np.array_split(np.arange(w), grid):
            cell = codes[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            hist = np.bincount(cell.ravel(), minlength=n_codes)[:n_codes]
            out.append(hist / cell.size)
    return np.concatenate(out).astype(np.float32)


def descriptor(grey: np.ndarray, method: str, params: Mapping[str, Any] | None = None
               ) -> np.ndarray:
    """The ``method`` grid descriptor of one grey image (float32 vector)."""
    p = params_for(method, params)
    n = int(p["P"]) + 2
    if method == "lbp":
        return grid_histograms(lbp_codes(grey, p["P"], p["R"]), n, int(p["grid"]))
    up, lo = ltp_codes(grey, p["P"], p["R"], p["threshold"])
    return np.concatenate([grid_histograms(up, n, int(p["grid"])),
                           grid_histograms(lo, n, int(p["grid"]))])


def dimension(method: str, params: Mapping[str, Any] | None = None) -> int:
    p = params_for(method, params)
    return (1 if method == "lbp" else 2) * int(p["grid"]) ** 2 * (int(p["P"]) + 2)


def texture_video(video_id: str, crops: pa.Table, keyframes: pa.Table, method: str,
                  params: Mapping[str, Any] | None = None) -> pa.Table:
    """Per-keyframe descriptors of one video, in the per-video layout of ``extract``
    (``video_id``, ``frame``, ``timestamp``, ``f_grid``), so ``gather_features``
    builds ``results/features/{method}/grid/features.parquet`` from it."""
    p = params_for(method, params)
    d = dimension(method, p)
    frames = crops.column("frame").to_pylist()
    rows = keyframe_rows(crops, keyframes)
    jpegs, stamps = crops.column("jpeg"), crops.column("timestamp")
    feats = np.zeros((len(rows), d), np.float32)
    for j, i in enumerate(rows):  # one decoded crop at a time
        grey = cv2.imdecode(np.frombuffer(jpegs[i].as_py(), np.uint8), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise ValueError(f"{video_id}: frame {frames[i]}: crop is not a decodable JPEG")
        feats[j] = descriptor(grey, method, p)
    log.info("%s: %s descriptors (%d values) of %d keyframes", video_id, method, d, len(rows))
    return pa.table({
        "video_id": pa.array([video_id] * len(rows), pa.string()),
        "frame": pa.array([frames[i] for i in rows], pa.int32()),
        "timestamp": pa.array([stamps[i].as_py() for i in rows], pa.float64()),
        f"f_{LAYER}": fixed_size_list(feats),
    })
