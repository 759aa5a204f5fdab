"""Rotation-robust, single-subject face tracking (the ``track`` stage).

The detector backends live in :mod:`neopain.faces.detectors` (``blazeface``, the default,
``mtcnn``, ``insightface``, ``mediapipe``); they find roughly upright faces.  A backend
with a ``detect_roi`` method (BlazeFace: its short-range model) gets the ROI views
through it, the whole-frame views through ``detect``.  This module makes them work on
infants lying at any in-plane rotation and follows ONE subject through a stream of
frames (never loading a whole video).

Views
    The detector never sees the raw frame.  It sees a *view*: the frame warped by
    a known 2x3 matrix ``A`` (original pixels -> view pixels), and everything it
    finds is mapped back with ``A^-1`` into ORIGINAL frame pixels (landmarks keep
    their semantic order, so a similarity transform to the template gives an
    upright crop).  Two kinds:

    * *full* views: the frame downscaled so that its longer side is ``max_side``,
      then rotated by 0, 90, 180 or 270 degrees clockwise (exact ``cv2.rotate``);
    * *ROI* views: a ``roi_size`` x ``roi_size`` square centred on the tracked face,
      ``roi_scale`` face sizes wide and rotated by the face's current roll so that
      the face is upright in it -- any in-plane angle, not only multiples of 90.

Per frame
    1. *Search* (no subject tracked, or lost for ``reacquire_after`` frames): full
       views at every angle of ``orientations``; detections of the same face from
       several angles are merged (IoU > 0.3, highest score kept); the subject is the
       one with the largest ``score x area`` among those with ``score >=
       acquire_score``, confirmed (``verify``) by detecting it again in an upright
       ROI view of the same frame (false detections at odd angles rarely survive
       that).  While nothing is found the search runs on every
       ``search_every``-th frame only; when it acquires a face, the skipped frames
       before it are tracked backwards from it (so no frame is lost to the skip).
    2. *Tracking* (a subject is tracked): an ROI view around the last accepted
       face (plus, every ``full_every`` frames, a full view at the current
       orientation, batched ``batch_size`` frames at a time -- the GPU setting).
       Among the candidates with ``score >= min_score``, the one nearest (centre
       distance / last face size, ties by IoU) the last accepted face is taken; it
       is accepted unless that distance exceeds ``max_jump * sqrt(1 + missed)`` or
       its size changed by more than ``max_scale_change`` (reason ``jump``).
    3. A scene cut (mean absolute difference of 32x18 grey thumbnails of
       consecutive frames above ``cut_threshold``) ends the track: the face after
       it is searched afresh, never followed across the cut.
    4. The orientation kept across frames is the multiple of 90 degrees nearest
       the accepted face's roll (estimated from its landmarks); it orders the next
       search and sets the full views.

Face-mesh check: with the mesh refiner, a face is accepted only when the mesh's
face-presence probability reaches ``min_mesh_score`` (None: the backend's
``mesh_score_default`` -- BlazeFace 0.5, MediaPipe Face Mesh's default
``min_tracking_confidence``; 0, off, for the others); below it the frame is
``occluded`` (a subject is tracked) or ``low_score``.  BlazeFace fires on drawn faces
(the cartoon of ``no_face.mp4``) on which the mesh scores < 0.5.

Score thresholds ``min_score`` / ``acquire_score`` left unset (None) take the
backend's calibrated ``score_defaults`` (MTCNN 0.9 / 0.95, BlazeFace, SCRFD and
MediaPipe 0.5 / 0.6).

Columns added to the original ones: ``orientation`` (int16, the clockwise rotation
of the frame in which the face is upright, multiple of 90), ``roll`` (float32,
the face's in-plane angle in degrees from its landmarks, clockwise positive),
``mode`` (``search``, ``roi``, ``full`` or ``skip``: how the frame was examined) and
``dense_landmarks`` (468 mesh or 106 points, x/y interleaved, original pixels; null
when the backend has none), ``dense_depth`` (the mesh's z per point, same pixel
scale; null without the face-mesh refiner) and ``mesh_score`` (its face-presence
probability).  ``n_faces`` counts the faces of the view(s) examined.

Reasons (column ``reason``): ``ok``; ``no_face`` (nothing found, no subject
tracked -- also the frames skipped by ``search_every`` while none is); ``low_score``
(faces, none at the score threshold, no subject tracked); ``jump`` (faces, but not
where the subject is); ``occluded`` (a subject is tracked, seen less than
``reacquire_after`` frames ago, and nothing at ``min_score`` is found where it is:
hands, blankets, turned away).  Rows of rejected frames hold the rejected
candidate (``ok`` false) or NaN / null.

Smoothing
    Boxes, 5 landmarks and dense landmarks of each run of consecutive ok frames
    are smoothed with a One-Euro filter (Casiez et al. 2012) run forwards and
    backwards and averaged: its cut-off frequency rises with speed (measured in
    face sizes per second), so still faces lose their jitter and fast motion is
    followed without lag; the two passes cancel the filter's phase lag.

Output: :data:`TRACK_SCHEMA`, one row per decoded frame, and a QC record.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import pyarrow as pa

from neopain.faces.detectors import (  # noqa: F401  (re-exported)
    DETECTORS,
    Detection,
    Detector,
    FaceMeshRefiner,
    MTCNNDetector,
    _roll_of,
    make_detector,
    nms,
)
from neopain.faces.video import Frame, VideoError, iter_frames

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_REACQUIRE_AFTER",
    "DETECTORS",
    "Detection",
    "Detector",
    "MTCNNDetector",
    "REASONS",
    "STATUSES",
    "TRACK_SCHEMA",
    "TrackParams",
    "qc_status",
    "associate",
    "build_detector",
    "make_detector",
    "one_euro",
    "track_video",
]

REASONS = ("ok", "no_face", "low_score", "jump", "occluded")
MODES = ("search", "roi", "full", "skip")
DEFAULT_REACQUIRE_AFTER = 15
DEFAULT_DETECTOR = "blazeface"
ORIENTATIONS = (0, 90, 180, 270)

TRACK_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("score", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
        pa.field("x2", pa.float32()),
        pa.field("y2", pa.float32()),
        pa.field("landmarks", pa.list_(pa.float32(), 10)),
        pa.field("n_faces", pa.int16(), nullable=False),
        # added by issue 3 (appended: old readers selecting columns keep working)
        pa.field("orientation", pa.int16(), nullable=False),
        pa.field("roll", pa.float32()),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("dense_landmarks", pa.list_(pa.float32())),
        # added by issue 15: the face mesh's depth and face-presence probability
        pa.field("dense_depth", pa.list_(pa.float32())),
        pa.field("mesh_score", pa.float32()),
    ]
)


@dataclass(frozen=True)
class TrackParams:
    """Tracker settings (config.yaml ``track``; see the module docstring)."""

    min_score: float | None = None  #: None: the backend's ``score_defaults[0]``
    acquire_score: float | None = None  #: score to start a track; None: ``score_defaults[1]``
    max_jump: float = 0.5
    max_scale_change: float = 1.5
    reacquire_after: int = DEFAULT_REACQUIRE_AFTER
    max_side: int | None = 480
    orientations: tuple[int, ...] = ORIENTATIONS
    search_every: int = 5
    roi: bool = True
    roi_size: int = 128
    roi_scale: float = 2.0
    full_every: int = 0
    batch_size: int = 1
    smooth: bool = True
    smooth_min_cutoff: float = 1.5  #: Hz
    smooth_beta: float = 2.0  #: per (face size / s)
    cut_threshold: float = 0.08  #: scene cut: mean |diff| of 32x18 grey thumbnails; 0 = off
    verify: bool = True  #: confirm a new track by an upright ROI detection on the same frame
    #: face-mesh face-presence probability a face needs (None: the backend's
    #: ``mesh_score_default``, BlazeFace 0.5, others 0 = off)
    min_mesh_score: float | None = None

    def __post_init__(self):
        if self.reacquire_after < 1:
            raise ValueError(f"reacquire_after must be >= 1, got {self.reacquire_after}")
        if not self.orientations or any(o not in ORIENTATIONS for o in self.orientations):
            raise ValueError(f"orientations must be a non-empty subset of {ORIENTATIONS}, "
                             f"got {self.orientations}")
        if self.search_every < 1 or self.batch_size < 1 or self.full_every < 0:
            raise ValueError("search_every and batch_size must be >= 1, full_every >= 0")
        if self.max_side is not None and self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")
        if self.roi_size < 32 or self.roi_scale < 1.0:
            raise ValueError("roi_size must be >= 32 and roi_scale >= 1")

    @property
    def start_score(self) -> float:
        return self.min_score if self.acquire_score is None else self.acquire_score

    def for_detector(self, detector) -> "TrackParams":
        """Fill unset score thresholds with the backend's calibrated defaults."""
        lo, hi = getattr(detector, "score_defaults", (0.9, 0.95))
        mesh = getattr(detector, "mesh_score_default", 0.0)
        return replace(self, min_score=lo if self.min_score is None else self.min_score,
                       acquire_score=hi if self.acquire_score is None else self.acquire_score,
                       min_mesh_score=mesh if self.min_mesh_score is None
                       else self.min_mesh_score)


# ----------------------------------------------------------------------------- geometry


def _rot_matrix(o: int, w: int, h: int) -> np.ndarray:
    """2x3 map of pixel coordinates under ``cv2.rotate`` by ``o`` degrees clockwise."""
    if o == 0:
        return np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if o == 90:
        return np.array([[0, -1.0, h - 1], [1.0, 0, 0]])
    if o == 180:
        return np.array([[-1.0, 0, w - 1], [0, -1.0, h - 1]])
    if o == 270:
        return np.array([[0, 1.0, 0], [-1.0, 0, w - 1]])
    raise ValueError(o)


_CV_ROT = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def _compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A o B`` for 2x3 affine matrices (B applied first)."""
    A3 = np.vstack([A, [0, 0, 1]])
    B3 = np.vstack([B, [0, 0, 1]])
    return (A3 @ B3)[:2]


def _apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ M[:, :2].T + M[:, 2]


def _map_back(det: Detection, Ainv: np.ndarray) -> Detection:
    """A detection in view pixels -> original pixels (``Ainv``: view -> original)."""
    x1, y1, x2, y2 = det.box
    corners = _apply(Ainv, [[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    lo, hi = corners.min(0), corners.max(0)
    s = math.sqrt(abs(np.linalg.det(Ainv[:, :2])))
    size = det.size * s
    dense = None if det.dense is None else _apply(Ainv, det.dense)
    return Detection(box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                     score=det.score, landmarks=_apply(Ainv, det.landmarks), dense=dense,
                     face_size=size)


def roll_degrees(landmarks: np.ndarray) -> float:
    """In-plane roll of a face from its 5 landmarks, degrees in (-180, 180], clockwise
    positive (image y down): 0 for an upright face, 90 when its top points right."""
    return math.degrees(_roll_of(landmarks))


def orientation_of(roll_deg: float) -> int:
    """The clockwise rotation (0/90/180/270) of the frame that makes such a face upright."""
    return int(round(-roll_deg / 90.0)) % 4 * 90


class _Views:
    """The views of one frame (cached per frame)."""

    def __init__(self, image: np.ndarray, max_side: int | None):
        self.image = image
        h, w = image.shape[:2]
        s = 1.0
        if max_side is not None and max(h, w) > max_side:
            s = max_side / max(h, w)
        self.scale = s
        self._small: np.ndarray | None = None
        self._full: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def thumb(self) -> np.ndarray:
        grey = cv2.cvtColor(self.small(), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32) / 255

    def small(self) -> np.ndarray:
        if self._small is None:
            if self.scale < 1.0:
                h, w = self.image.shape[:2]
                size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
                self._small = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
            else:
                self._small = self.image
        return self._small

    def full(self, o: int) -> tuple[np.ndarray, np.ndarray]:
        """(view image, A) of the downscaled frame rotated by ``o`` clockwise."""
        if o not in self._full:
            small = self.small()
            h, w = self.image.shape[:2]
            hs, ws = small.shape[:2]
            S = np.array([[ws / w, 0, 0], [0, hs / h, 0]])
            img = small if o == 0 else cv2.rotate(small, _CV_ROT[o])
            self._full[o] = (np.ascontiguousarray(img), _compose(_rot_matrix(o, ws, hs), S))
        return self._full[o]

    def roi(self, centre, size: float, roll_deg: float, roi_size: int,
            roi_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Square view ``roi_scale`` face sizes wide around ``centre``, face upright."""
        k = roi_size / max(roi_scale * size, 1e-6)
        src = self.image
        pre = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        if k < 0.5:  # area-downscale the neighbourhood first (warpAffine would alias)
            half = 0.75 * roi_scale * size
            h, w = src.shape[:2]
            x0, y0 = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
            x1, y1 = min(w, int(centre[0] + half) + 1), min(h, int(centre[1] + half) + 1)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                f = 2.0 * k
                patch = src[y0:y1, x0:x1]
                pw, ph = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
                src = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
                pre = np.array([[pw / (x1 - x0), 0, -x0 * pw / (x1 - x0)],
                                [0, ph / (y1 - y0), -y0 * ph / (y1 - y0)]])
        theta = math.radians(-roll_deg)
        c, s = math.cos(theta) * k, math.sin(theta) * k
        A = np.array([[c, -s, 0.0], [s, c, 0.0]])
        A[:, 2] = roi_size / 2.0 - A[:, :2] @ np.asarray(centre, dtype=np.float64)
        Apre = _compose(A, cv2.invertAffineTransform(pre))  # pre-scaled src -> roi
        img = cv2.warpAffine(src, Apre, (roi_size, roi_size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return img, A


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(prev: Detection, det: Detection) -> float:
    """Centre distance normalised by the previous face size."""
    (px, py), (cx, cy) = prev.centre, det.centre
    return math.hypot(cx - px, cy - py) / max(prev.size, 1e-6)


def _merge(dets: Iterable[Detection], thresh: float = 0.3) -> list[Detection]:
    """One detection per face (IoU > thresh merged, highest score kept)."""
    dets = list(dets)
    if len(dets) < 2:
        return dets
    boxes = np.array([d.box for d in dets])
    scores = np.array([d.score for d in dets])
    return [dets[i] for i in nms(boxes, scores, thresh)]


# ----------------------------------------------------------------------------- decisions


def associate(prev: Detection | None, active: bool, dets: Sequence[Detection],
              params: TrackParams, missed: int = 0) -> tuple[str, Detection | None]:
    """The tracker's decision for one frame: ``(reason, chosen)``.

    ``prev`` is the last accepted face, ``active`` whether the subject is still
    tracked (seen less than ``reacquire_after`` frames ago), ``missed`` the number
    of frames since it was accepted.  Pure function (see the module docstring).
    """
    if not active or prev is None:
        good = [d for d in dets if d.score >= params.start_score]
        if not dets:
            return "no_face", None
        if not good:
            return "low_score", max(dets, key=lambda d: d.score)
        return "ok", max(good, key=lambda d: d.score * d.area)
    good = [d for d in dets if d.score >= params.min_score]
    if not good:
        # the subject is tracked but not visible where it is
        return "occluded", (max(dets, key=lambda d: d.score) if dets else None)
    chosen = min(good, key=lambda d: (_centre_distance(prev, d), -_iou(prev.box, d.box)))
    ratio = chosen.size / max(prev.size, 1e-6)
    far = _centre_distance(prev, chosen) > params.max_jump * math.sqrt(1 + missed)
    if far or max(ratio, 1 / max(ratio, 1e-9)) > params.max_scale_change:
        return "jump", chosen
    return "ok", chosen


# ----------------------------------------------------------------------------- smoothing


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def _one_euro_step(x: np.ndarray, prev: np.ndarray, dx_hat: np.ndarray, dt: float,
                   scale: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One step of the One-Euro filter: ``(output, dx_hat)`` (``dt``: signed time step)."""
    dt = max(abs(dt), 1e-3)
    dx = (x - prev) / dt / max(scale, 1e-6)  # face sizes per second
    a_d = _alpha(d_cutoff, dt)
    dx_hat = a_d * dx + (1 - a_d) * dx_hat
    a = _alpha(min_cutoff + beta * np.abs(dx_hat), dt)
    return a * x + (1 - a) * prev, dx_hat


def _one_euro_pass(x: np.ndarray, t: np.ndarray, scale: np.ndarray, min_cutoff: float,
                   beta: float, d_cutoff: float = 1.0) -> np.ndarray:
    out = np.empty_like(x)
    out[0] = x[0]
    dx_hat = np.zeros_like(x[0])
    for i in range(1, len(x)):
        out[i], dx_hat = _one_euro_step(x[i], out[i - 1], dx_hat, t[i] - t[i - 1], scale[i],
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
    fwd = _one_euro_pass(x, t, sc, min_cutoff, beta)
    bwd = _one_euro_pass(x[::-1], t[::-1], sc[::-1], min_cutoff, beta)[::-1]
    return 0.5 * (fwd + bwd)


def _smooth_rows(rows: list[dict], params: TrackParams) -> None:
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


# ----------------------------------------------------------------------------- the tracker


class _Tracker:
    def __init__(self, detector, params: TrackParams, refiner=None):
        self.det = detector
        self.p = params
        self.refiner = refiner
        self.prev: Detection | None = None
        self.missed = 0
        self.orientation = params.orientations[0]
        self.since_search = 0
        self.calls = {"search": 0, "roi": 0, "full": 0}

    # --- detector calls ------------------------------------------------------------
    def _detect_views(self, views: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Detection]]:
        imgs = [v[0] for v in views]
        if len(imgs) > 1 and hasattr(self.det, "detect_batch"):
            raw = self.det.detect_batch(imgs)
        else:
            raw = [self.det.detect(im) for im in imgs]
        out = []
        for (_, A), dets in zip(views, raw):
            Ainv = cv2.invertAffineTransform(A)
            out.append([_map_back(d, Ainv) for d in dets])
        return out

    def search(self, views: _Views) -> list[Detection]:
        self.calls["search"] += 1
        order = [self.orientation] + [o for o in self.p.orientations if o != self.orientation]
        found = self._detect_views([views.full(o) for o in order])
        return _merge(d for ds in found for d in ds)

    def full(self, views: _Views) -> list[Detection]:
        self.calls["full"] += 1
        return self._detect_views([views.full(self.orientation)])[0]

    def roi(self, views: _Views, prev: Detection) -> list[Detection]:
        self.calls["roi"] += 1
        roll = roll_degrees(prev.landmarks)
        img, A = views.roi(prev.centre, prev.size, roll, self.p.roi_size, self.p.roi_scale)
        if hasattr(self.det, "detect_roi"):  # a model made for faces filling the view
            Ainv = cv2.invertAffineTransform(A)
            return [_map_back(d, Ainv) for d in self.det.detect_roi(img)]
        return self._detect_views([(img, A)])[0]

    # --- one frame -----------------------------------------------------------------
    def _finish(self, frame: Frame, reason: str, chosen: Detection | None, n_faces: int,
                mode: str, views: _Views) -> dict:
        ok = reason == "ok"
        if ok and self.refiner is not None:
            chosen = self.refiner.refine(frame.image, chosen)
            if chosen.mesh_score is not None and chosen.mesh_score < (self.p.min_mesh_score
                                                                      or 0.0):
                # the mesh finds no face there: a face-like pattern, or the face hidden
                ok, reason = False, ("occluded" if self.active else "low_score")
        if ok:
            self.prev, self.missed = chosen, 0
            self.orientation = orientation_of(roll_degrees(chosen.landmarks))
        else:
            self.missed += 1
        return {"frame": frame.index, "timestamp": frame.timestamp, "ok": ok, "reason": reason,
                "det": chosen, "n_faces": n_faces, "mode": mode,
                "orientation": self.orientation if chosen is None else
                orientation_of(roll_degrees(chosen.landmarks))}

    @property
    def active(self) -> bool:
        return self.prev is not None and self.missed < self.p.reacquire_after

    def track_step(self, frame: Frame, views: _Views, full_dets: list[Detection] | None,
                   ref: Detection | None = None) -> dict:
        """A frame while a subject is tracked (``ref``: face to track from)."""
        prev = ref or self.prev
        dets: list[Detection] = []
        mode = "roi"
        if self.p.roi:
            dets = self.roi(views, prev)
        if full_dets is not None:
            dets = _merge(list(dets) + list(full_dets))
            mode = "full" if not self.p.roi else mode
        elif not self.p.roi:
            dets, mode = self.full(views), "full"
        reason, chosen = associate(prev, True, dets, self.p, 0 if ref is not None else self.missed)
        n_faces = len(full_dets) if full_dets is not None else len(dets)
        return self._finish(frame, reason, chosen, n_faces, mode, views)

    def search_step(self, frame: Frame, views: _Views) -> dict:
        dets = self.search(views)
        reason, chosen = associate(None, False, dets, self.p)
        if reason == "ok" and self.p.verify and self.p.roi:
            reason, chosen = self._verify(views, dets, chosen)
        return self._finish(frame, reason, chosen, len(dets), "search", views)

    def _verify(self, views: _Views, dets: list[Detection], first: Detection):
        """Confirm a new subject by detecting it again in an upright ROI view."""
        good = sorted((d for d in dets if d.score >= self.p.start_score),
                      key=lambda d: -d.score * d.area)[:3]
        for cand in good:
            again = [d for d in self.roi(views, cand) if d.score >= self.p.min_score
                     and _centre_distance(cand, d) <= self.p.max_jump]
            if again:
                return "ok", max(again, key=lambda d: d.score)
        return "low_score", first


def _row_from_skip(frame: Frame, orientation: int) -> dict:
    return {"frame": frame.index, "timestamp": frame.timestamp, "ok": False, "reason": "no_face",
            "det": None, "n_faces": 0, "mode": "skip", "orientation": orientation}


def track_video(
    path: str | os.PathLike,
    detector: Detector,
    min_score: float | None = None,
    max_jump: float = 0.5,
    fps_for_images: float = 30.0,
    max_frames: int | None = None,
    reacquire_after: int = DEFAULT_REACQUIRE_AFTER,
    progress: Callable[[int], None] | None = None,
    *,
    params: TrackParams | None = None,
    refiner: FaceMeshRefiner | None = None,
    on_error: str = "fail",
    frames: Iterable[Frame] | None = None,
    on_row: Callable[[dict], None] | None = None,
    **settings: Any,
) -> tuple[pa.Table, dict[str, Any]]:
    """Detect and track one subject's face through a source (streamed).

    Settings: either ``params`` (a :class:`TrackParams`) or the keyword arguments
    (``min_score``, ``max_jump``, ``reacquire_after`` and any other
    :class:`TrackParams` field).  ``refiner`` (e.g. :class:`FaceMeshRefiner`)
    refines the landmarks of every accepted face.  ``frames`` replaces decoding
    ``path`` (any iterable of :class:`Frame`; tests use rotated copies).  ``on_row`` is
    called with each row (a dict: ``frame``, ``timestamp``, ``ok``, ``reason``, ``det``
    -- unsmoothed --, ...) as soon as it is decided, in frame order, at most
    ``search_every`` frames late; a scene cut before the next frame sets
    ``cut_after`` on it later (:mod:`neopain.deploy.stream` scores while tracking).

    ``on_error``: what a :class:`VideoError` while decoding does -- ``"fail"``
    re-raises it; ``"record"`` returns the rows of the frames decoded before it
    (a frame folder's unreadable images are skipped, the others tracked) and
    records the problem in ``error`` (the message) and ``frames_lost``.

    Returns ``(table, qc)``: ``table`` follows :data:`TRACK_SCHEMA`; ``qc`` has
    ``n_frames``, ``n_ok``, ``success_rate``, ``status``, ``frames_lost`` (frames
    of the source that could not be read: truncated tail, unreadable images;
    ``None`` when a broken container does not say how many), ``reasons``,
    ``orientations`` (ok frames per orientation), ``detector_calls``, ``error``,
    ``params`` and ``detector`` (``detector.info()``); no timings (the elapsed
    time is logged).  :func:`qc_status` gives the status.
    """
    if on_error not in ("fail", "record"):
        raise ValueError(f"on_error must be 'fail' or 'record', got {on_error!r}")
    if params is None:
        params = TrackParams(min_score=min_score, max_jump=max_jump,
                             reacquire_after=reacquire_after, **settings)
    elif settings:
        raise TypeError(f"give either params or settings, not both: {sorted(settings)}")
    p = params = params.for_detector(detector)
    tr = _Tracker(detector, p, refiner)
    rows: list[dict] = []
    pending: list[tuple[Frame, _Views]] = []  # frames skipped by search_every
    t0 = time.perf_counter()
    n = 0
    n_cuts = 0
    last_thumb: list[np.ndarray | None] = [None]
    error: str | None = None
    lost: int | None = 0
    bad_images: list[str] = []

    def bad_image(index: int, exc: VideoError) -> None:
        nonlocal lost
        lost = (lost or 0) + 1
        bad_images.append(f"frame {index}: {exc}")
        log.error("%s (frame %d skipped)", exc, index)

    def emit(row):
        nonlocal n
        rows.append(row)
        n += 1
        if on_row is not None:
            on_row(row)
        if progress is not None:
            progress(n)

    def flush_pending(found: dict | None):
        """Resolve skipped frames: track them backwards from a new acquisition."""
        if not pending:
            return
        resolved: list[dict] = []
        if found is not None and found["ok"]:
            ref = found["det"]
            saved = (tr.prev, tr.missed, tr.orientation)
            misses = 0
            for fr, vw in reversed(pending):
                if misses >= p.reacquire_after:
                    resolved.append(_row_from_skip(fr, tr.orientation))
                    continue
                row = tr.track_step(fr, vw, None, ref=ref)
                if row["reason"] == "occluded":  # before the subject was first seen
                    row["reason"] = "no_face" if row["det"] is None else "low_score"
                if row["ok"]:
                    ref, misses = row["det"], 0
                else:
                    misses += 1
                resolved.append(row)
            tr.prev, tr.missed, tr.orientation = saved
            resolved.reverse()
        else:
            resolved = [_row_from_skip(fr, tr.orientation) for fr, _ in pending]
        for r in resolved:
            emit(r)
        pending.clear()

    source = frames if frames is not None else iter_frames(
        path, fps_for_images=fps_for_images, max_frames=max_frames,
        on_bad_image=bad_image if on_error == "record" else None)
    it = iter(source)
    try:
        while True:
            chunk: list[Frame] = []
            for _ in range(p.batch_size):
                try:
                    chunk.append(next(it))
                except StopIteration:
                    break
            if not chunk:
                break
            views = [_Views(f.image, p.max_side) for f in chunk]
            cuts = []
            for vw in views:
                th = vw.thumb() if p.cut_threshold > 0 else None
                cuts.append(th is not None and last_thumb[0] is not None
                            and float(np.mean(np.abs(th - last_thumb[0]))) > p.cut_threshold)
                last_thumb[0] = th
            prefetched: dict[int, list[Detection]] = {}
            if p.full_every and tr.active:
                idx = [i for i, f in enumerate(chunk) if f.index % p.full_every == 0]
                if idx:
                    tr.calls["full"] += len(idx)
                    got = tr._detect_views([views[i].full(tr.orientation) for i in idx])
                    prefetched = dict(zip(idx, got))
            for i, (frame, vw) in enumerate(zip(chunk, views)):
                if cuts[i]:  # a scene cut: the subject cannot be followed across it
                    n_cuts += 1
                    flush_pending(None)
                    tr.prev, tr.missed, tr.since_search = None, 0, 0
                    prefetched.pop(i, None)
                    if rows:
                        rows[-1]["cut_after"] = True
                if tr.active:
                    emit(tr.track_step(frame, vw, prefetched.get(i)))
                    tr.since_search = 0
                    continue
                if tr.since_search % p.search_every != 0:
                    tr.since_search += 1
                    pending.append((frame, vw))
                    continue
                tr.since_search += 1
                row = tr.search_step(frame, vw)
                flush_pending(row)
                emit(row)
                if row["ok"]:
                    tr.since_search = 0
    except VideoError as exc:
        if on_error == "fail":
            raise
        error = str(exc)
        lost = None if exc.frames_lost is None else (lost or 0) + exc.frames_lost
        log.error("%s", error)
    if pending and error is None:  # the last skipped frames: search the last one
        frame, vw = pending.pop()
        row = tr.search_step(frame, vw)
        flush_pending(row)
        emit(row)
    flush_pending(None)
    if bad_images:
        error = "; ".join(filter(None, [error, f"{len(bad_images)} unreadable image(s) "
                                        f"skipped, first {bad_images[0]}"]))

    if p.smooth:
        _smooth_rows(rows, p)
    table = _to_table(rows)
    reasons = dict.fromkeys(REASONS, 0)
    orient = {str(o): 0 for o in ORIENTATIONS}
    for r in rows:
        reasons[r["reason"]] += 1
        if r["ok"]:
            orient[str(r["orientation"])] += 1
    n_ok = reasons["ok"]
    rate = n_ok / n if n else 0.0
    status = qc_status(n, n_ok, error)
    seconds = time.perf_counter() - t0
    info = detector.info()
    if refiner is not None:
        info = {**info, "refiner": refiner.info()}
    qc = {
        "n_frames": n,
        "n_ok": n_ok,
        "success_rate": rate,
        "status": status,
        "error": error,
        "frames_lost": lost,
        "reasons": reasons,
        "orientations": orient,
        "detector_calls": dict(tr.calls),
        "scene_cuts": n_cuts,
        "params": {**{k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in p.__dict__.items()},
                   "fps_for_images": fps_for_images, "max_frames": max_frames},
        "detector": info,
    }
    log.info("%s: %d/%d frames tracked (%s) in %.1f s (%.1f frames/s)", path, n_ok, n, status,
             seconds, n / seconds if seconds > 0 else float("nan"))
    return table, qc


STATUSES = ("ok", "low_success", "partial", "no_face", "error")


def qc_status(n_frames: int, n_ok: int, error: str | None) -> str:
    """A source's tracking status, the first that applies:

    ``error``: no frame could be read; ``no_face``: frames read, no face tracked;
    ``partial``: faces tracked, but part of the source could not be read (a truncated
    video's tail, a frame folder's unreadable images: ``frames_lost``); ``ok``: at
    least half the frames tracked; ``low_success``: fewer.  ``error`` and ``no_face``
    sources have no crops and are left out downstream; ``partial`` ones are used with
    the frames that were read.
    """
    if error is not None and n_frames == 0:
        return "error"
    if n_ok == 0:
        return "no_face"
    if error is not None:
        return "partial"
    return "ok" if n_ok / n_frames >= 0.5 else "low_success"


def _to_table(rows: list[dict]) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in TRACK_SCHEMA}
    for r in rows:
        d: Detection | None = r["det"]
        cols["frame"].append(r["frame"])
        cols["timestamp"].append(r["timestamp"])
        cols["ok"].append(r["ok"])
        cols["reason"].append(r["reason"])
        cols["n_faces"].append(r["n_faces"])
        cols["orientation"].append(r["orientation"])
        cols["mode"].append(r["mode"])
        if d is None:
            cols["score"].append(float("nan"))
            for k in ("x1", "y1", "x2", "y2"):
                cols[k].append(float("nan"))
            cols["landmarks"].append(None)
            cols["roll"].append(float("nan"))
            cols["dense_landmarks"].append(None)
            cols["dense_depth"].append(None)
            cols["mesh_score"].append(float("nan"))
        else:
            cols["score"].append(d.score)
            for k, v in zip(("x1", "y1", "x2", "y2"), d.box):
                cols[k].append(float(v))
            lm = np.asarray(d.landmarks, dtype=np.float32)
            cols["landmarks"].append(lm.ravel().tolist())
            cols["roll"].append(roll_degrees(lm))
            cols["dense_landmarks"].append(
                None if d.dense is None else np.asarray(d.dense, np.float32).ravel().tolist())
            cols["dense_depth"].append(
                None if d.depth is None else np.asarray(d.depth, np.float32).tolist())
            cols["mesh_score"].append(float("nan") if d.mesh_score is None else d.mesh_score)
    return pa.Table.from_pydict(cols, schema=TRACK_SCHEMA)


# ----------------------------------------------------------------------------- config


def build_detector(cfg: dict[str, Any], repo_root: str | os.PathLike | None = None):
    """``(detector, refiner)`` from a ``track`` config section (see config.yaml)."""
    name = cfg.get("detector", DEFAULT_DETECTOR)
    device = cfg.get("device", "auto")
    dev = None if device == "auto" else device

    def _path(x):
        if x is None or repo_root is None or os.path.isabs(str(x)):
            return x
        return os.path.join(str(repo_root), str(x))

    if name == "blazeface":
        sub = dict(cfg.get("blazeface", {}) or {})
        sub["model_dir"] = _path(sub.get("model_dir"))
        det = make_detector("blazeface", **sub)
    elif name == "mtcnn":
        sub = dict(cfg.get("mtcnn", {}) or {})
        det = make_detector("mtcnn", device=dev, max_side=None, **sub)
    elif name == "insightface":
        sub = dict(cfg.get("insightface", {}) or {})
        sub["model_dir"] = _path(sub.get("model_dir"))
        det = make_detector("insightface", device=dev, **sub)
    elif name == "mediapipe":
        sub = dict(cfg.get("mediapipe", {}) or {})
        sub["python"] = _path(sub.get("python"))
        det = make_detector("mediapipe", device=dev, **sub)
    else:
        det = make_detector(name)  # raises naming the known detectors
    refiner = None
    if cfg.get("landmarks", "facemesh") == "facemesh":
        sub = dict(cfg.get("facemesh", {}) or {})
        mdir = _path(sub.get("model_dir"))
        backend = sub.get("backend") or "auto"
        if backend == "auto":  # litert unless the folder holds only FaceMesh.onnx
            only_onnx = mdir is not None and os.path.isfile(
                os.path.join(str(mdir), FaceMeshRefiner.FILES["onnx"])) and not os.path.isfile(
                os.path.join(str(mdir), FaceMeshRefiner.FILES["litert"]))
            backend = "onnx" if only_onnx else "litert"
        refiner = FaceMeshRefiner(model_dir=mdir, sha256=sub.get("sha256"),
                                  device=dev, backend=backend,
                                  replace_five=bool(sub.get("replace_five", False)),
                                  mouth_from_mesh=name == "blazeface")
    return det, refiner


PARAM_KEYS = tuple(TrackParams.__dataclass_fields__)


def params_from_config(cfg: dict[str, Any]) -> TrackParams:
    kw = {k: cfg[k] for k in PARAM_KEYS if k in cfg}
    if "orientations" in kw:
        kw["orientations"] = tuple(int(o) for o in kw["orientations"])
    return TrackParams(**kw)
