"""Face detection and single-subject tracking.

Detector
    :class:`MTCNNDetector` wraps ``facenet_pytorch.MTCNN`` (the weights
    ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` ship inside the facenet-pytorch
    wheel, nothing is downloaded).  Each frame is downscaled so that its
    longer side is at most ``max_side`` pixels, detected on, and the boxes and
    landmarks are scaled back to ORIGINAL frame pixels.  ``min_face_size`` is
    in pixels of that (downscaled) detection image.  It runs on CUDA when
    available, on the CPU otherwise.  Any object with ``detect(rgb) ->
    list[Detection]`` and ``info() -> dict`` can stand in for it.

Tracking (:func:`track_video`)
    One subject is followed through the video:

    1. *Acquisition* (no track yet, or the track has been lost for
       ``reacquire_after`` consecutive frames -- default 15, i.e. half a second
       at 30 fps): among detections with ``score >= min_score`` the one with
       the largest ``score x box area`` is taken.
    2. *Following*: the detection (with ``score >= min_score``) whose centre
       is nearest the previous tracked box's centre is the candidate; ties in
       distance go to the higher IoU with the previous box.  The distance is
       normalised by the previous box size ``sqrt(w*h)``.  If that normalised
       distance exceeds ``max_jump`` the frame is rejected with reason
       ``"jump"`` (the track keeps its last box).  The previous box is the
       last *accepted* box, so after a few missed frames the subject must
       still be near where it was last seen, until ``reacquire_after`` misses
       in a row make the tracker re-acquire from scratch.

    Reasons per frame: ``"ok"``; ``"no_face"`` (no detection at all);
    ``"low_score"`` (detections, none at ``min_score``); ``"jump"``.  For
    rejected frames that had detections, the columns hold the rejected
    candidate (best-scoring one for ``low_score``) with ``ok = False``;
    ``no_face`` rows hold NaN box/score and null landmarks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import cv2
import numpy as np
import pyarrow as pa

from .video import iter_frames

log = logging.getLogger(__name__)

__all__ = [
    "DETECTORS",
    "Detection",
    "Detector",
    "MTCNNDetector",
    "REASONS",
    "TRACK_SCHEMA",
    "make_detector",
    "track_video",
]

REASONS = ("ok", "no_face", "low_score", "jump")
DEFAULT_REACQUIRE_AFTER = 15

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
    ]
)


@dataclass(frozen=True)
class Detection:
    """One detected face, in original frame pixels."""

    box: tuple[float, float, float, float]  #: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  #: (5, 2): eye (image-left), eye (image-right), nose, mouth L, mouth R

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (0.5 * (x1 + x2), 0.5 * (y1 + y2))

    @property
    def size(self) -> float:
        """Geometric-mean side length ``sqrt(w*h)``."""
        return math.sqrt(self.area)


class Detector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Detection]: ...

    def info(self) -> dict[str, Any]: ...


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _pick_device(device: str | None):
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class MTCNNDetector:
    """facenet-pytorch MTCNN, all faces per frame (``keep_all=True``)."""

    name = "mtcnn"
    WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")

    def __init__(
        self,
        device: str | None = None,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        max_side: int = 640,
    ):
        import torch
        import facenet_pytorch
        from facenet_pytorch import MTCNN

        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32 (or None), got {max_side}")
        self.device = _pick_device(device)
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.max_side = None if max_side is None else int(max_side)
        self._mtcnn = MTCNN(
            keep_all=True,
            min_face_size=self.min_face_size,
            thresholds=list(self.thresholds),
            select_largest=False,  # order by probability
            post_process=False,
            device=self.device,
        )
        self._mtcnn.eval()

        # Record exactly which weights were loaded: hash the files MTCNN reads
        # and check that the loaded parameters equal their contents.
        data_dir = Path(facenet_pytorch.__file__).resolve().parent / "data"
        self._weights: dict[str, str] = {}
        for fname, net in zip(
            self.WEIGHT_FILES, (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet)
        ):
            wpath = data_dir / fname
            if not wpath.is_file():
                raise FileNotFoundError(f"{wpath}: MTCNN weight file missing")
            saved = torch.load(wpath, map_location="cpu", weights_only=True)
            loaded = net.state_dict()
            if set(saved) != set(loaded) or any(
                not torch.equal(saved[k], loaded[k].detach().cpu()) for k in saved
            ):
                raise RuntimeError(f"{wpath}: loaded MTCNN parameters differ from this file")
            self._weights[fname] = _sha256_file(wpath)
        try:
            self._version = metadata.version("facenet-pytorch")
        except metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
            self._version = "unknown"
        log.debug("MTCNN on %s, weights %s", self.device, self._weights)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": "facenet-pytorch",
            "version": self._version,
            "weights": dict(self._weights),
            "device": str(self.device),
            "params": {
                "min_face_size": self.min_face_size,
                "thresholds": list(self.thresholds),
                "max_side": self.max_side,
            },
        }

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in an HxWx3 uint8 RGB frame, highest score first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        scale = 1.0
        img = rgb
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            # exact per-axis factors after rounding
            sx, sy = w / size[0], h / size[1]
        else:
            sx = sy = 1.0
        boxes, probs, points = self._mtcnn.detect(np.ascontiguousarray(img), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return []
        out = []
        for box, prob, pts in zip(boxes, probs, points):
            if prob is None:
                continue
            b = (float(box[0]) * sx, float(box[1]) * sy, float(box[2]) * sx, float(box[3]) * sy)
            lm = np.asarray(pts, dtype=np.float64).reshape(5, 2) * np.array([sx, sy])
            out.append(Detection(box=b, score=float(prob), landmarks=lm))
        out.sort(key=lambda d: -d.score)
        return out


DETECTORS: dict[str, type] = {"mtcnn": MTCNNDetector}


def make_detector(name: str, **params: Any):
    """Instantiate a detector from :data:`DETECTORS` by name."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; known detectors: {', '.join(sorted(DETECTORS))}"
        ) from None
    return cls(**params)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(prev: Detection, det: Detection) -> float:
    """Centre distance normalised by the previous box size."""
    (px, py), (cx, cy) = prev.centre, det.centre
    return math.hypot(cx - px, cy - py) / max(prev.size, 1e-6)


def track_video(
    path: str | os.PathLike,
    detector: Detector,
    min_score: float = 0.9,
    max_jump: float = 0.5,
    fps_for_images: float = 30.0,
    max_frames: int | None = None,
    reacquire_after: int = DEFAULT_REACQUIRE_AFTER,
    progress: Callable[[int], None] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Detect and track one subject's face through a source.

    Returns ``(table, qc)``: ``table`` follows :data:`TRACK_SCHEMA`, one row
    per decoded frame; ``qc`` has ``n_frames``, ``n_ok``, ``success_rate``,
    ``status`` (``"ok"`` when n_ok > 0 and rate >= 0.5, ``"low_success"``
    when 0 < rate < 0.5, ``"no_face"`` when n_ok == 0), ``reasons`` (count per
    reason), ``params`` and ``detector`` (``detector.info()``); no timings,
    so the record is reproducible (the elapsed time is logged instead).
    A source without any face is not an error.  ``progress(frames_done)`` is
    called after every frame.
    """
    if reacquire_after < 1:
        raise ValueError(f"reacquire_after must be >= 1, got {reacquire_after}")
    cols: dict[str, list] = {f.name: [] for f in TRACK_SCHEMA}
    prev: Detection | None = None
    missing = 0  # consecutive non-ok frames since the last accepted one
    reasons = dict.fromkeys(REASONS, 0)
    t0 = time.perf_counter()
    n = 0

    for frame in iter_frames(path, fps_for_images=fps_for_images, max_frames=max_frames):
        dets = detector.detect(frame.image)
        good = [d for d in dets if d.score >= min_score]
        chosen: Detection | None = None
        if not dets:
            reason = "no_face"
        elif not good:
            reason, chosen = "low_score", dets[0]
        elif prev is None or missing >= reacquire_after:
            reason, chosen = "ok", max(good, key=lambda d: d.score * d.area)
        else:
            chosen = min(good, key=lambda d: (_centre_distance(prev, d), -_iou(prev.box, d.box)))
            reason = "ok" if _centre_distance(prev, chosen) <= max_jump else "jump"

        ok = reason == "ok"
        if ok:
            prev, missing = chosen, 0
        else:
            missing += 1
        reasons[reason] += 1

        cols["frame"].append(frame.index)
        cols["timestamp"].append(frame.timestamp)
        cols["ok"].append(ok)
        cols["reason"].append(reason)
        cols["n_faces"].append(len(dets))
        if chosen is None:
            cols["score"].append(float("nan"))
            for k in ("x1", "y1", "x2", "y2"):
                cols[k].append(float("nan"))
            cols["landmarks"].append(None)
        else:
            cols["score"].append(chosen.score)
            for k, v in zip(("x1", "y1", "x2", "y2"), chosen.box):
                cols[k].append(v)
            cols["landmarks"].append(np.asarray(chosen.landmarks, dtype=np.float32).ravel().tolist())
        n += 1
        if progress is not None:
            progress(n)

    table = pa.Table.from_pydict(cols, schema=TRACK_SCHEMA)
    n_ok = reasons["ok"]
    rate = n_ok / n if n else 0.0
    if n_ok == 0:
        status = "no_face"
    elif rate >= 0.5:
        status = "ok"
    else:
        status = "low_success"
    seconds = time.perf_counter() - t0
    qc = {
        "n_frames": n,
        "n_ok": n_ok,
        "success_rate": rate,
        "status": status,
        "reasons": reasons,
        "params": {
            "min_score": min_score,
            "max_jump": max_jump,
            "fps_for_images": fps_for_images,
            "max_frames": max_frames,
            "reacquire_after": reacquire_after,
        },
        "detector": detector.info(),
    }
    log.info("%s: %d/%d frames tracked (%s) in %.1f s", path, n_ok, n, status, seconds)
    return table, qc
