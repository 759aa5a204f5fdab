"""Optical-strain features of a video's aligned face crops (Zamzmi et al. 2018, sec. 5.3).

The handcrafted half of the paper's Table 7, after the optical-strain method of
Zamzmi et al. (SCIA 2017, "Automated pain assessment in neonates"), here as an
explicit, parameterised implementation (it does not claim equality with the
authors' unpublished code):

1. **Flow.** For every two *consecutive* aligned crops of the crop table (the
   table holds the tracker's ok frames only, so a missing frame number is a gap
   in the track), dense optical flow from the earlier to the later crop, on
   grey images, by OpenCV's Farneback algorithm (``cv2.calcOpticalFlowFarneback``
   with the ``flow`` parameters: ``pyr_scale`` 0.5, ``levels`` 3, ``winsize``
   25, ``iterations`` 3, ``poly_n`` 5, ``poly_sigma`` 1.2, no flags; OpenCV's
   sample uses ``winsize`` 15: on CK+ crops 25 raises the median ratio of a
   sequence's peak strain to its neutral-start level from 1.7 to 2.2). The
   flow is ``(u, v)`` in crop pixels, ``prev(y, x) ~ next(y + v, x + u)``.
2. **Gaps.** Two successive crops whose frame numbers differ by more than
   ``max_gap`` (default 1: only truly consecutive frames) form *no* pair: the
   signal gets a row with ``valid = False`` and NaN strain there, so a tracking
   gap never produces flow between non-consecutive frames. With ``max_gap`` > 1
   a pair ``gap`` frames apart is used and its strain divided by ``gap`` (strain
   per frame interval).
3. **Strain.** The optical strain tensor is the symmetric part of the flow's
   spatial Jacobian, ``eps = 1/2 (grad w + grad w^T)`` with ``w = (u, v)``:
   ``eps_xx = du/dx``, ``eps_yy = dv/dy``, ``eps_xy = 1/2 (du/dy + dv/dx)``.
   Each flow component is first smoothed by a Gaussian of ``smooth`` px
   (default 4; Farneback's per-pixel estimates are noisy and differentiation
   amplifies the noise: with ``winsize`` 15 a sub-pixel translation of a
   synthetic texture reads as a mean magnitude of 0.008 unsmoothed and 0.002
   with sigma 4, against 0.028 for a 2 % scaling; a linear flow field is
   unchanged by the blur), then differentiated by central differences
   (``numpy.gradient``, one-sided at the image edge). The magnitude per pixel
   is the Frobenius norm ``|eps| = sqrt(eps_xx^2 + eps_yy^2 + 2 eps_xy^2)``
   (= Shreve et al.'s ``sqrt(eps_xx^2 + eps_yy^2 + eps_xy^2 + eps_yx^2)``). It
   is dimensionless (pixels per pixel, per frame interval) and blind to
   translation and rotation: a uniform scaling by ``s`` gives
   ``eps_xx = eps_yy = s``, a shear ``u = g y`` gives ``eps_xy = g / 2``.
4. **Regions.** The magnitude is averaged over the whole face and over four
   quadrants of the aligned crop split at ``split_x``/``split_y`` (fractions of
   the crop size; 0.5 = the centre: the ArcFace template puts the eyes at
   y = 0.46 and the nose tip at 0.64 of the crop, so the upper regions hold
   brows and eyes, the lower ones nose, cheeks and mouth): ``upper_left``,
   ``upper_right``, ``lower_left``, ``lower_right`` (image left/right). A band
   of ``margin`` pixels along the crop border is left out of every region
   (flow and its derivatives are least reliable there).
5. **Signal.** One row per pair: the region means over time
   (:data:`SIGNAL_SCHEMA`), written as ``results/strain/{video}.parquet``.
   ``reference: first`` measures each crop against the first crop of its run
   instead (deformation since then, for short onset-to-apex clips).
   Per-video peak features of this signal: :mod:`neopain.features.strainfeatures`.

A video with fewer than two crops, or without any valid pair, gets a signal table with
a ``reason`` (``no_crops``, ``one_crop``, ``no_consecutive_pairs``) in its metadata
instead of an error. A crop table that cannot be read, lacks a column or holds
an undecodable JPEG raises :class:`StrainError` naming the file (and frame).

Crops are streamed from the Parquet file in record batches of JPEG bytes and
decoded one at a time; at most two decoded crops are alive at once (tested).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

#: Farneback parameters (names of ``cv2.calcOpticalFlowFarneback``)
FLOW_DEFAULTS: dict[str, Any] = {"pyr_scale": 0.5, "levels": 3, "winsize": 25,
                                 "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
#: Gaussian sigma (crop pixels) smoothing each flow component before differentiation
SMOOTH_DEFAULT = 4.0
REGIONS = ("face", "upper_left", "upper_right", "lower_left", "lower_right")
REASONS = ("no_crops", "one_crop", "no_consecutive_pairs")
STATUS_KEY = b"neopain.strain_status"

SIGNAL_SCHEMA = pa.schema(
    [("frame", pa.int32()), ("prev_frame", pa.int32()), ("timestamp", pa.float64()),
     ("gap", pa.int32()), ("valid", pa.bool_())]
    + [(f"strain_{r}", pa.float64()) for r in REGIONS]
)


class StrainError(ValueError):
    """A crop table that cannot be used (names the file)."""


# ----------------------------------------------------------------------------
# flow and strain
# ----------------------------------------------------------------------------
def flow_params(flow: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`FLOW_DEFAULTS` with ``flow`` on top (unknown names refused)."""
    out = dict(FLOW_DEFAULTS)
    for k, v in dict(flow or {}).items():
        if k not in FLOW_DEFAULTS:
            raise ValueError(f"unknown Farneback parameter {k!r}; known: "
                             f"{', '.join(FLOW_DEFAULTS)}")
        out[k] = v
    return out


def farneback_flow(prev: np.ndarray, nxt: np.ndarray,
                   flow: Mapping[str, Any] | None = None) -> np.ndarray:
    """Dense flow ``prev -> nxt`` of two uint8 grey images, (H, W, 2) float32 (u, v)."""
    p = flow_params(flow)
    return cv2.calcOpticalFlowFarneback(
        prev, nxt, None, float(p["pyr_scale"]), int(p["levels"]), int(p["winsize"]),
        int(p["iterations"]), int(p["poly_n"]), float(p["poly_sigma"]), 0)


def smooth_flow(flow: np.ndarray, sigma: float = SMOOTH_DEFAULT) -> np.ndarray:
    """Each flow component blurred by a Gaussian of ``sigma`` px (0: unchanged)."""
    if not sigma:
        return flow
    return np.dstack([cv2.GaussianBlur(np.ascontiguousarray(flow[..., i]), (0, 0),
                                       float(sigma), borderType=cv2.BORDER_REPLICATE)
                      for i in range(2)])


def strain_tensor(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(eps_xx, eps_yy, eps_xy)`` of a (H, W, 2) flow field (central differences)."""
    u = flow[..., 0].astype(np.float64)
    v = flow[..., 1].astype(np.float64)
    du_dy, du_dx = np.gradient(u)
    dv_dy, dv_dx = np.gradient(v)
    return du_dx, dv_dy, 0.5 * (du_dy + dv_dx)


def strain_magnitude(flow: np.ndarray) -> np.ndarray:
    """Per-pixel ``sqrt(eps_xx^2 + eps_yy^2 + 2 eps_xy^2)``."""
    exx, eyy, exy = strain_tensor(flow)
    return np.sqrt(exx * exx + eyy * eyy + 2.0 * exy * exy)


def region_masks(h: int, w: int, split_x: float = 0.5, split_y: float = 0.5,
                 margin: int = 8) -> dict[str, np.ndarray]:
    """Boolean masks of :data:`REGIONS` for an ``h`` x ``w`` crop."""
    if not (0.0 < split_x < 1.0 and 0.0 < split_y < 1.0):
        raise ValueError(f"split_x/split_y must lie in (0, 1), got {split_x}, {split_y}")
    if margin < 0 or 2 * margin >= min(h, w):
        raise ValueError(f"margin {margin} leaves nothing of a {h}x{w} crop")
    inner = np.zeros((h, w), bool)
    inner[margin:h - margin, margin:w - margin] = True
    cx, cy = int(round(split_x * w)), int(round(split_y * h))
    yy, xx = np.mgrid[0:h, 0:w]
    up, left = yy < cy, xx < cx
    masks = {"face": inner, "upper_left": inner & up & left,
             "upper_right": inner & up & ~left, "lower_left": inner & ~up & left,
             "lower_right": inner & ~up & ~left}
    for name, m in masks.items():
        if not m.any():
            raise ValueError(f"region {name} is empty for a {h}x{w} crop")
    return masks


def region_strain(prev: np.ndarray, nxt: np.ndarray, masks: Mapping[str, np.ndarray],
                  flow: Mapping[str, Any] | None = None,
                  smooth: float = SMOOTH_DEFAULT) -> dict[str, float]:
    """Mean strain magnitude of the pair ``prev -> nxt`` in every region."""
    mag = strain_magnitude(smooth_flow(farneback_flow(prev, nxt, flow), smooth))
    return {name: float(mag[m].mean()) for name, m in masks.items()}


# ----------------------------------------------------------------------------
# streaming crops
# ----------------------------------------------------------------------------
def _grey(jpeg: bytes, where: str, frame: int) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE) \
        if jpeg else None
    if img is None:
        raise StrainError(f"{where}: frame {frame}: crop is not a decodable JPEG")
    return img


def iter_crops(crops: str | os.PathLike | pa.Table, batch_size: int = 32
               ) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame, timestamp, grey crop)`` in table order, decoded one at a time.

    ``crops`` is a crop-table path (read in record batches: only ``batch_size`` JPEGs
    are in memory at once) or a ``pa.Table`` (tests).
    """
    cols = ["frame", "timestamp", "jpeg"]
    if isinstance(crops, pa.Table):
        where = "crop table"
        missing = [c for c in cols if c not in crops.column_names]
        if missing:
            raise StrainError(f"{where}: missing column(s) {missing}")
        batches: Any = crops.select(cols).to_batches(batch_size)
    else:
        where = str(crops)
        try:
            pf = pq.ParquetFile(where)
        except Exception as exc:  # noqa: BLE001  (arrow raises several kinds)
            raise StrainError(f"{where}: not a readable crop table "
                              f"({type(exc).__name__}: {exc})") from exc
        missing = [c for c in cols if c not in pf.schema_arrow.names]
        if missing:
            raise StrainError(f"{where}: not a crop table: missing column(s) {missing}")
        batches = pf.iter_batches(batch_size=batch_size, columns=cols)
    try:
        for batch in batches:
            d = batch.to_pydict()
            for fr, ts, jp in zip(d["frame"], d["timestamp"], d["jpeg"]):
                yield int(fr), float(ts), _grey(jp, where, int(fr))
    except StrainError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StrainError(f"{where}: crop table is corrupt ({type(exc).__name__}: "
                          f"{exc})") from exc


# ----------------------------------------------------------------------------
# the per-frame signal of one video
# ----------------------------------------------------------------------------
REFERENCES = ("previous", "first")


def strain_signal(
    crops: str | os.PathLike | pa.Table, flow: Mapping[str, Any] | None = None,
    max_gap: int = 1, split_x: float = 0.5, split_y: float = 0.5, margin: int = 8,
    smooth: float = SMOOTH_DEFAULT, reference: str = "previous",
) -> pa.Table:
    """Strain-over-time signal of one video (:data:`SIGNAL_SCHEMA`).

    One row per two successive crops: valid when their frame numbers differ by at
    most ``max_gap``, else ``valid = False`` with NaN strain (a gap: no flow across
    it). ``reference``: ``previous`` (default) -- the strain of the flow from the
    previous crop (per frame interval: divided by the gap), i.e. the rate of
    deformation; ``first`` -- the flow from the first crop of the current run of
    valid pairs (``prev_frame`` names it), i.e. the deformation accumulated since
    then, for short onset-to-apex clips such as CK+ (a gap starts a new run).
    The schema metadata ``neopain.strain_status`` (JSON) holds ``n_crops``,
    ``n_pairs`` (valid ones) and ``reason`` ("" or one of :data:`REASONS`).
    """
    if int(max_gap) < 1:
        raise ValueError(f"max_gap must be >= 1, got {max_gap}")
    if float(smooth) < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    where = "crop table" if isinstance(crops, pa.Table) else str(crops)
    params = flow_params(flow)
    cols: dict[str, list] = {f.name: [] for f in SIGNAL_SCHEMA}
    masks = shape = None
    last = ref = None   # (frame, grey): with the current crop, two decoded crops alive
    n_crops = 0
    for frame, ts, grey in iter_crops(crops):
        n_crops += 1
        if last is not None:
            lframe = last[0]
            if frame <= lframe:
                raise StrainError(f"{where}: frames not increasing ({lframe} then {frame})")
            if grey.shape != shape:
                raise StrainError(f"{where}: frame {frame}: crop size {grey.shape} differs "
                                  f"from {shape}")
            gap = frame - lframe
            valid = gap <= int(max_gap)
            if valid:
                if masks is None:
                    masks = region_masks(*grey.shape, split_x, split_y, margin)
                if reference == "previous":
                    src_frame = lframe
                    vals = region_strain(last[1], grey, masks, params, smooth)
                    vals = {k: v / gap for k, v in vals.items()}
                else:
                    src_frame = ref[0]
                    vals = region_strain(ref[1], grey, masks, params, smooth)
            else:
                src_frame = lframe
                vals = {r: float("nan") for r in REGIONS}
                if reference == "first":
                    ref = (frame, grey)     # a gap starts a new run
            cols["frame"].append(frame)
            cols["prev_frame"].append(src_frame)
            cols["timestamp"].append(ts)
            cols["gap"].append(gap)
            cols["valid"].append(valid)
            for r in REGIONS:
                cols[f"strain_{r}"].append(vals[r])
        else:
            shape = grey.shape
            ref = (frame, grey) if reference == "first" else None
        last = (frame, grey if reference == "previous" else None)
        del grey   # the next decode then finds at most one other crop alive
    n_pairs = int(sum(cols["valid"]))
    reason = ("no_crops" if n_crops == 0 else "one_crop" if n_crops == 1
              else "no_consecutive_pairs" if n_pairs == 0 else "")
    status = {"n_crops": n_crops, "n_pairs": n_pairs, "reason": reason}
    table = pa.Table.from_pydict(cols, schema=SIGNAL_SCHEMA)
    return table.replace_schema_metadata({STATUS_KEY: json.dumps(status, sort_keys=True)
                                          .encode()})


def signal_status(table: pa.Table) -> dict[str, Any]:
    meta = table.schema.metadata or {}
    if STATUS_KEY not in meta:
        raise StrainError("strain signal table without neopain.strain_status metadata")
    return json.loads(meta[STATUS_KEY])
