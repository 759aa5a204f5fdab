"""Zero-lag One-Euro smoothing of the tracked face (boxes, 5 and dense landmarks).

Boxes, 5 landmarks and dense landmarks of each run of consecutive ok frames are smoothed
with a One-Euro filter (Casiez et al. 2012) run forwards and backwards and averaged: its
cut-off frequency rises with speed (measured in face sizes per second), so still faces
lose their jitter and fast motion is followed without lag; the two passes cancel the
filter's phase lag.  :mod:`neopain.deploy.stream` runs the same step causally.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

__all__ = ["one_euro", "one_euro_pass", "one_euro_step", "smooth_rows"]


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro_step(x: np.ndarray, prev: np.ndarray, dx_hat: np.ndarray, dt: float,
                   scale: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One step of the One-Euro filter: ``(output, dx_hat)`` (``dt``: signed time step)."""
    dt = max(abs(dt), 1e-3)
    dx = (x - prev) / dt / max(scale, 1e-6)  # face sizes per second
    a_d = _alpha(d_cutoff, dt)
    dx_hat = a_d * dx + (1 - a_d) * dx_hat
    a = _alpha(min_cutoff + beta * np.abs(dx_hat), dt)
    return a * x + (1 - a) * prev, dx_hat


def one_euro_pass(x: np.ndarray, t: np.ndarray, scale: np.ndarray, min_cutoff: float,
                   beta: float, d_cutoff: float = 1.0) -> np.ndarray:
    """One causal One-Euro pass over a (T, ...) series (time steps ``t``, speed ``scale``)."""
    out = np.empty_like(x)
    out[0] = x[0]
    dx_hat = np.zeros_like(x[0])
    for i in range(1, len(x)):
        out[i], dx_hat = one_euro_step(x[i], out[i - 1], dx_hat, t[i] - t[i - 1], scale[i],
                                        min_cutoff, beta, d_cutoff)
    return out


def one_euro(x: np.ndarray, t: np.ndarray, scale: np.ndarray | float = 1.0,
             min_cutoff: float = 1.5, beta: float = 2.0) -> np.ndarray:
    """Zero-lag One-Euro smoothing of a (T, ...) series: forward and backward passes
    averaged.  ``scale`` (per frame or scalar) normalises speed (face size)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if len(x) < 3:
        return x.copy()
    sc = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(x),))
    fwd = one_euro_pass(x, t, sc, min_cutoff, beta)
    bwd = one_euro_pass(x[::-1], t[::-1], sc[::-1], min_cutoff, beta)[::-1]
    return 0.5 * (fwd + bwd)


def smooth_rows(rows: list[dict], params) -> None:
    """Smooth the detections of the tracker's rows in place, run by run of consecutive ok
    frames (never across a scene cut); ``params``: a
    :class:`~neopain.faces.trackparams.TrackParams`."""
    i = 0
    n = len(rows)
    while i < n:
        if not rows[i]["ok"]:
            i += 1
            continue
        j = i
        while (j + 1 < n and rows[j + 1]["ok"] and rows[j + 1]["frame"] == rows[j]["frame"] + 1
               and not rows[j].get("cut_after")):
            j += 1
        run = rows[i: j + 1]
        if len(run) >= 3:
            t = np.array([r["timestamp"] for r in run])
            size = np.array([r["det"].size for r in run])
            kw = dict(min_cutoff=params.smooth_min_cutoff, beta=params.smooth_beta)
            lm = one_euro(np.stack([r["det"].landmarks for r in run]), t, size, **kw)
            box = one_euro(np.array([r["det"].box for r in run]), t, size, **kw)
            dense = None
            shapes = {None if r["det"].dense is None else r["det"].dense.shape for r in run}
            if len(shapes) == 1 and None not in shapes:
                dense = one_euro(np.stack([r["det"].dense for r in run]), t, size, **kw)
            depth = None
            if dense is not None and all(r["det"].depth is not None for r in run):
                depth = one_euro(np.stack([r["det"].depth for r in run]), t, size, **kw)
            for k, r in enumerate(run):
                r["det"] = replace(r["det"], landmarks=lm[k], box=tuple(box[k]),
                                   dense=r["det"].dense if dense is None else dense[k],
                                   depth=r["det"].depth if depth is None else depth[k])
        i = j + 1
