"""Face detector backends behind one interface (see :class:`Detector`).

Every backend finds faces in an HxWx3 uint8 RGB image that is roughly upright
(the tracker in :mod:`neopain.faces.track` takes care of rotation and of scaling) and
returns :class:`Detection` objects in that image's pixels, with five landmarks in
the ArcFace template order: image-left eye, image-right eye, nose tip, image-left
mouth corner, image-right mouth corner (for an upright face: the subject's right
eye first).  ``info()`` records which package, model files (sha256) and device
really ran.  Nothing is ever downloaded.

Backends (``track.detector`` in config.yaml, registry :data:`DETECTORS`):

``blazeface`` (default)
    MediaPipe's BlazeFace, short range (ROI views) and full range sparse (whole
    frames), from the pinned mediapipe wheel, run by ``ai-edge-litert`` in this
    environment and decoded as MediaPipe's graphs do: :mod:`neopain.faces.blazeface`.
``mtcnn``
    facenet-pytorch MTCNN, weights ``pnet.pt``/``rnet.pt``/``onet.pt`` inside the
    wheel.  Batched on CUDA when present.
``insightface``
    SCRFD (insightface's detector, ONNX) run with onnxruntime: decoded here
    (strides 8/16/32, two anchors per cell, distance-to-box and -keypoint
    regression, score threshold, NMS) exactly as insightface's ``SCRFD`` class
    does.  The model directory is ``track.insightface.model_dir``; when it holds
    ``2d106det.onnx`` (insightface's buffalo_l pack) the 106-point landmarks are
    added as dense landmarks.
``mediapipe``
    MediaPipe 0.10.21 face detection (BlazeFace full range) + 468-point face mesh,
    run by :mod:`neopain.faces.mediapipe_worker` in a separate interpreter
    (``track.mediapipe.python``, default ``.venv-mediapipe/bin/python``: mediapipe
    0.10.21 needs numpy<2 and protobuf 4, which the main environment cannot hold).

Landmark refiner (``track.landmarks: facemesh``, the default): :class:`FaceMeshRefiner`
runs the MediaPipe 468-point face mesh on an upright 192x192 crop of each detection
(any backend, any roll): ``face_landmark.tflite`` taken from the pinned mediapipe
wheel (:mod:`neopain.faces.mpmodels`) run by ``ai-edge-litert`` (``backend: litert``), or
the same network as ``FaceMesh.onnx`` run by onnxruntime (``backend: onnx``).  It sets
``dense`` (x, y), ``depth`` (z, same pixel scale) and ``mesh_score``; with
``replace_five`` the five points become mesh-derived ones, with ``mouth_from_mesh``
only the mouth corners (set for BlazeFace, which has none of its own).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import subprocess
import threading
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, Sequence

import cv2
import numpy as np

from neopain.core.provenance import sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "DETECTORS",
    "Detection",
    "Detector",
    "FaceMeshRefiner",
    "MTCNNDetector",
    "MediapipeDetector",
    "SCRFDDetector",
    "make_detector",
    "mesh_to_five",
]


@dataclass(frozen=True)
class Detection:
    """One detected face, in the pixels of the image it is reported for."""

    box: tuple[float, float, float, float]  #: x1, y1, x2, y2 (axis-aligned)
    score: float
    landmarks: np.ndarray  #: (5, 2) in template order (see module docstring)
    dense: np.ndarray | None = None  #: (N, 2) dense landmarks (468 mesh / 106), or None
    face_size: float | None = None  #: side of the face box in the detector's own frame
    depth: np.ndarray | None = None  #: (N,) mesh z in the frame's pixel scale (face mesh only)
    mesh_score: float | None = None  #: face-mesh face-presence probability

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
        """Face size: ``face_size`` when known (rotation-invariant), else ``sqrt(w*h)``."""
        if self.face_size is not None:
            return float(self.face_size)
        return math.sqrt(self.area)


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...

    def info(self) -> dict[str, Any]: ...


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")


def _pick_device(device: str | None):
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression (IoU > thresh suppressed), indices kept."""
    if len(boxes) == 0:
        return []
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1) * np.maximum(0.0, yy2 - yy1)
        iou = inter / np.maximum(areas[i] + areas[order[1:]] - inter, 1e-12)
        order = order[1:][iou <= thresh]
    return keep


# ---------------------------------------------------------------------------- MTCNN


class MTCNNDetector:
    """facenet-pytorch MTCNN, all faces per frame (``keep_all=True``).

    ``max_side`` downscales large inputs before detection (results are in the
    input's pixels); the tracker already hands it downscaled views, so it
    builds this detector with ``max_side=None``.
    """

    name = "mtcnn"
    score_defaults = (0.9, 0.95)  #: (min_score, acquire_score) calibrated for this backend
    WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")

    def __init__(
        self,
        device: str | None = None,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        max_side: int | None = 640,
    ):
        import facenet_pytorch
        import torch
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
            self._weights[fname] = sha256_file(wpath)
        self._version = _version("facenet-pytorch")
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

    def _prepare(self, rgb: np.ndarray):
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if self.max_side is not None and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            return np.ascontiguousarray(img), (w / size[0], h / size[1])
        return np.ascontiguousarray(rgb), (1.0, 1.0)

    @staticmethod
    def _to_dets(boxes, probs, points, sx, sy) -> list[Detection]:
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

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces in an HxWx3 uint8 RGB frame, highest score first."""
        import torch

        img, (sx, sy) = self._prepare(rgb)
        with torch.inference_mode():            # no autograd graph (and no global switch)
            boxes, probs, points = self._mtcnn.detect(img, landmarks=True)
        return self._to_dets(boxes, probs, points, sx, sy)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect on several images; images of equal size go through MTCNN as one batch."""
        out: list[list[Detection] | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        prepared = [self._prepare(im) for im in images]
        for i, (img, _) in enumerate(prepared):
            groups.setdefault(img.shape, []).append(i)
        for idx in groups.values():
            if len(idx) == 1:
                out[idx[0]] = self.detect(images[idx[0]])
                continue
            batch = np.stack([prepared[i][0] for i in idx])
            import torch

            with torch.inference_mode():
                boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
            for j, i in enumerate(idx):
                sx, sy = prepared[i][1]
                out[i] = self._to_dets(boxes[j], probs[j], points[j], sx, sy)
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------- onnxruntime


def _ort_session(path: Path, device: str | None, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting worker threads: they would steal the cores torch (MTCNN) and
    # the decoder need when several models share a 2-core job
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    want_cuda = device in (None, "auto") or str(device).startswith("cuda")
    providers = ["CPUExecutionProvider"]
    if want_cuda and "CUDAExecutionProvider" in available and device != "cpu":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    return sess, sess.get_providers()[0]


def _find_model_files(model_dir: str | os.PathLike | None, what: str, config_key: str,
                      candidates: Sequence[str], explicit: str | None) -> Path:
    if not model_dir:
        raise FileNotFoundError(
            f"{what}: no model directory configured; set {config_key} to a local folder "
            f"holding {explicit or ' or '.join(candidates)} (nothing is downloaded)"
        )
    d = Path(model_dir).expanduser()
    names = [explicit] if explicit else list(candidates)
    for n in names:
        if (d / n).is_file():
            return d / n
    have = sorted(p.name for p in d.glob("*.onnx")) if d.is_dir() else []
    raise FileNotFoundError(
        f"{what}: {d} holds no detector model; expected "
        f"{' or '.join(names)} (e.g. from insightface's buffalo_l pack: det_10g.onnx, "
        f"2d106det.onnx); found {have if d.is_dir() else 'no such directory'}. "
        f"Nothing is downloaded: put the files there or set {config_key}."
    )


class SCRFDDetector:
    """insightface SCRFD (ONNX) with its 5 keypoints, optionally 106-point landmarks.

    Preprocessing as insightface: the image is scaled to fit ``det_size`` x
    ``det_size`` (aspect kept), pasted top-left on black, normalised
    ``(x - 127.5) / 128`` in RGB order.  Models with a dynamic input size get
    the scaled image padded to a multiple of 32 instead (faster on small views).
    """

    name = "insightface"
    score_defaults = (0.5, 0.6)  #: SCRFD scores run lower than MTCNN's
    DET_CANDIDATES = ("det_10g.onnx", "scrfd_10g_bnkps.onnx", "scrfd_2.5g_bnkps.onnx",
                      "scrfd_500m_bnkps.onnx", "det_2.5g.onnx", "det_500m.onnx", "scrfd_2.5g.onnx")
    LANDMARK_FILE = "2d106det.onnx"
    STRIDES = (8, 16, 32)

    def __init__(self, model_dir: str | os.PathLike | None = None, det_model: str | None = None,
                 det_size: int = 640, det_thresh: float = 0.5, nms_thresh: float = 0.4,
                 landmarks_106: bool = True, device: str | None = None,
                 sha256: dict[str, str] | None = None, threads: int | None = None):
        self.det_path = _find_model_files(model_dir, "insightface backend",
                                          "track.insightface.model_dir", self.DET_CANDIDATES,
                                          det_model)
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.nms_thresh = float(nms_thresh)
        self._weights = {self.det_path.name: sha256_file(self.det_path)}
        lm_path = self.det_path.parent / self.LANDMARK_FILE
        self.lm_path = lm_path if (landmarks_106 and lm_path.is_file()) else None
        if self.lm_path is not None:
            self._weights[lm_path.name] = sha256_file(lm_path)
        for fname, want in (sha256 or {}).items():
            if self._weights.get(fname) != want:
                raise ValueError(f"{self.det_path.parent / fname}: sha256 "
                                 f"{self._weights.get(fname)} != pinned {want}")
        self._sess, self._provider = _ort_session(self.det_path, device, threads)
        inp = self._sess.get_inputs()[0]
        self._input_name = inp.name
        self._fixed = all(isinstance(s, int) for s in inp.shape[2:])
        if self._fixed:
            self.det_size = int(inp.shape[2])
        outs = self._sess.get_outputs()
        if len(outs) not in (6, 9):
            raise ValueError(f"{self.det_path}: {len(outs)} outputs, not an SCRFD model")
        self._use_kps = len(outs) == 9
        if not self._use_kps:
            raise ValueError(f"{self.det_path}: this SCRFD model has no keypoints (need *_bnkps)")
        self._lm_sess = None
        if self.lm_path is not None:
            self._lm_sess, _ = _ort_session(self.lm_path, device, threads)
        self._centres: dict[tuple, np.ndarray] = {}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": "onnxruntime",
            "version": _version("onnxruntime"),
            "model": "SCRFD" + (" + 2d106det" if self._lm_sess is not None else ""),
            "weights": dict(self._weights),
            "device": self._provider,
            "params": {"det_size": self.det_size, "det_thresh": self.det_thresh,
                       "nms_thresh": self.nms_thresh, "model_file": self.det_path.name},
        }

    def _anchor_centres(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centres:
            ys, xs = np.mgrid[: h // stride, : w // stride]
            c = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            self._centres[key] = np.repeat(c, 2, axis=0)  # two anchors per cell
        return self._centres[key]

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        if self._fixed:
            size_w = size_h = self.det_size
        else:
            s = min(1.0, self.det_size / max(h, w))
            size_w = int(math.ceil(w * s / 32) * 32)
            size_h = int(math.ceil(h * s / 32) * 32)
        scale = min(size_w / w, size_h / h)
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        canvas = np.zeros((size_h, size_w, 3), np.float32)
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA
                                      if scale < 1 else cv2.INTER_LINEAR)
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self._sess.run(None, {self._input_name: np.ascontiguousarray(blob)})
        outs = [o[0] if o.ndim == 3 else o for o in outs]
        boxes, scores, kpss = [], [], []
        for i, stride in enumerate(self.STRIDES):
            sc = outs[i].reshape(-1)
            bb = outs[i + 3].reshape(-1, 4) * stride
            kp = outs[i + 6].reshape(-1, 10) * stride
            centres = self._anchor_centres(size_h, size_w, stride)
            keep = np.where(sc >= self.det_thresh)[0]
            if keep.size == 0:
                continue
            c = centres[keep]
            d = bb[keep]
            boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1],
                                   c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=1))
            k = kp[keep].reshape(-1, 5, 2) + c[:, None, :]
            kpss.append(k)
            scores.append(sc[keep])
        if not boxes:
            return []
        B = np.concatenate(boxes) / scale
        S = np.concatenate(scores)
        K = np.concatenate(kpss) / scale
        out = []
        for i in nms(B, S, self.nms_thresh):
            det = Detection(box=tuple(float(v) for v in B[i]), score=float(S[i]),
                            landmarks=K[i].astype(np.float64))
            if self._lm_sess is not None:
                det = replace(det, dense=self._landmarks_106(rgb, det.box))
            out.append(det)
        out.sort(key=lambda d: -d.score)
        return out

    def _landmarks_106(self, rgb: np.ndarray, box) -> np.ndarray:
        """insightface ``Landmark`` (2d106det): 192x192 crop of 1.5x the box, points in [-1, 1]."""
        inp = self._lm_sess.get_inputs()[0]
        size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 192
        x1, y1, x2, y2 = box
        cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
        k = size / (max(x2 - x1, y2 - y1) * 1.5)
        M = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]])
        crop = cv2.warpAffine(rgb, M, (size, size), borderValue=0)
        blob = crop.astype(np.float32).transpose(2, 0, 1)[None]  # mean 0, std 1 (bn_data)
        pred = self._lm_sess.run(None, {inp.name: blob})[0].reshape(-1, 2)
        pts = (pred + 1.0) * (size // 2)
        Minv = cv2.invertAffineTransform(M)
        return pts @ Minv[:, :2].T + Minv[:, 2]


# ---------------------------------------------------------------------------- FaceMesh


#: mesh indices (MediaPipe canonical face mesh) averaged into the five template points
MESH_FIVE = (
    (33, 133, 159, 145),  # image-left eye (subject's right): corners + lids
    (263, 362, 386, 374),  # image-right eye
    (1,),  # nose tip
    (61,),  # image-left mouth corner
    (291,),  # image-right mouth corner
)


def mesh_to_five(mesh: np.ndarray) -> np.ndarray:
    """Five template-order points from 468 face-mesh points, (5, 2)."""
    mesh = np.asarray(mesh)[:, :2]
    return np.stack([mesh[list(ix)].mean(0) for ix in MESH_FIVE]).astype(np.float64)


def _roll_of(landmarks: np.ndarray) -> float:
    """In-plane angle (radians) of the eye line, image y down."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    eyes = lm[1] - lm[0]
    mouth = 0.5 * (lm[3] + lm[4]) - 0.5 * (lm[0] + lm[1])  # eyes -> mouth, "down"
    # combine the eye line with the perpendicular of the face's vertical axis
    v = eyes / max(np.linalg.norm(eyes), 1e-9) + np.array([mouth[1], -mouth[0]]) / max(
        np.linalg.norm(mouth), 1e-9)
    return math.atan2(v[1], v[0])


class _LiteRTMesh:
    """``face_landmark.tflite`` with ai-edge-litert: (1, 192, 192, 3) -> 1404 + face logit."""

    package = "ai-edge-litert"

    def __init__(self, path: Path, threads: int | None):
        from ai_edge_litert.interpreter import Interpreter

        n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1
        self._it = Interpreter(model_path=str(path), num_threads=n)
        self._it.allocate_tensors()
        self._inp = self._it.get_input_details()[0]["index"]
        outs = {int(np.prod(d["shape"])): d["index"] for d in self._it.get_output_details()}
        if 1404 not in outs or 1 not in outs:
            raise ValueError(f"{path}: not MediaPipe's face_landmark model (outputs {sorted(outs)})")
        self._pts, self._flag = outs[1404], outs[1]
        self.device = "cpu"

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, float | None]:
        self._it.set_tensor(self._inp, x)
        self._it.invoke()
        logit = float(self._it.get_tensor(self._flag).ravel()[0])
        return self._it.get_tensor(self._pts).reshape(-1, 3), logit


class _OnnxMesh:
    """``FaceMesh.onnx`` with onnxruntime (the same network, no face flag)."""

    package = "onnxruntime"

    def __init__(self, path: Path, device: str | None, threads: int | None):
        self._sess, self.device = _ort_session(path, device, threads)
        self._inp = self._sess.get_inputs()[0].name
        outs = self._sess.get_outputs()
        self._flag = next((k for k, o in enumerate(outs) if int(np.prod(
            [d for d in o.shape if isinstance(d, int)] or [0])) == 1), None)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, float | None]:
        outs = self._sess.run(None, {self._inp: x})
        pts = next(o for o in outs if o.size == 1404).reshape(-1, 3)
        logit = None if self._flag is None else float(np.ravel(outs[self._flag])[0])
        return pts, logit


class FaceMeshRefiner:
    """468 MediaPipe face-mesh landmarks (x, y, z) on every accepted face.

    The model takes a 1x192x192x3 RGB crop in [0, 1] of an upright face (the
    detection box enlarged 1.5x, rotated so that the eyes are level, as
    MediaPipe's own pipeline feeds it) and returns 468 x (x, y, z) in crop
    pixels (z: depth relative to the face's centre, same scale as x) and a
    face-presence logit.  :meth:`refine` maps them back to the frame and sets
    ``dense``, ``depth``, ``mesh_score`` and, with ``replace_five``, the five
    template points.

    ``backend``: ``litert`` (``face_landmark.tflite`` from the mediapipe wheel,
    :mod:`neopain.faces.mpmodels`, default) or ``onnx`` (``FaceMesh.onnx``).  The model
    file is looked up in ``model_dir``; ``None`` tries ``resources/weights`` in the
    working directory, then the repository's ``resources/weights``.
    """

    name = "facemesh"
    FILES = {"litert": "face_landmark.tflite", "onnx": "FaceMesh.onnx"}
    SIZE = 192

    def __init__(self, model_dir: str | os.PathLike | None = None, sha256: str | None = None,
                 replace_five: bool = True, device: str | None = None,
                 threads: int | None = None, backend: str = "onnx",
                 mouth_from_mesh: bool = False):
        if backend not in self.FILES:
            raise ValueError(f"track.facemesh.backend must be one of {sorted(self.FILES)}, "
                             f"got {backend!r}")
        fname = self.FILES[backend]
        if model_dir is None and backend == "litert":
            model_dir = next((d for d in (Path("resources/weights"), Path(__file__).resolve()
                                          .parents[2] / "resources" / "weights")
                              if (d / fname).is_file()), None)
            if model_dir is None:
                raise FileNotFoundError(
                    f"facemesh landmarks: {fname} is not in resources/weights; take it from "
                    "the pinned mediapipe wheel with `make mesh-weights` (or `python -m "
                    "neopain.faces.mpmodels DIR`) and/or set track.facemesh.model_dir")
        self.path = _find_model_files(model_dir, "facemesh landmarks",
                                      "track.facemesh.model_dir", (fname,), None)
        digest = sha256_file(self.path)
        if backend == "litert" and not sha256:
            from neopain.faces.mpmodels import MESH_SHA256
            sha256 = MESH_SHA256
        if sha256 and digest != sha256:
            raise ValueError(f"{self.path}: sha256 {digest} != pinned {sha256}")
        self._digest = digest
        self.backend = backend
        self.replace_five = bool(replace_five)
        self.mouth_from_mesh = bool(mouth_from_mesh)
        self._net = (_LiteRTMesh(self.path, threads) if backend == "litert"
                     else _OnnxMesh(self.path, device, threads))

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "package": self._net.package,
                "version": _version(self._net.package),
                "weights": {self.path.name: self._digest}, "device": self._net.device,
                "params": {"replace_five": self.replace_five, "backend": self.backend,
                           "mouth_from_mesh": self.mouth_from_mesh}}

    def refine(self, rgb: np.ndarray, det: Detection) -> Detection:
        lm = np.asarray(det.landmarks, dtype=np.float64).reshape(5, 2)
        x1, y1, x2, y2 = det.box
        c = np.array([0.5 * (x1 + x2), 0.5 * (y1 + y2)])
        size = det.size * 1.5
        theta = _roll_of(lm)
        k = self.SIZE / max(size, 1e-6)
        cs, sn = math.cos(-theta) * k, math.sin(-theta) * k
        A = np.array([[cs, -sn, 0.0], [sn, cs, 0.0]])
        A[:, 2] = self.SIZE / 2 - A[:, :2] @ c
        crop = cv2.warpAffine(rgb, A, (self.SIZE, self.SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = np.ascontiguousarray((crop.astype(np.float32) / 255.0)[None])
        raw, logit = self._net(x)
        pts = raw[:, :2].astype(np.float64)
        Ainv = cv2.invertAffineTransform(A)
        mesh = pts @ Ainv[:, :2].T + Ainv[:, 2]
        depth = raw[:, 2].astype(np.float64) / k  # crop pixels -> frame pixels
        five = lm
        if self.replace_five:
            five = mesh_to_five(mesh)
        elif self.mouth_from_mesh:  # the detector's mouth corners were approximations
            five = np.concatenate([lm[:3], mesh_to_five(mesh)[3:]])
        score = None if logit is None else float(1.0 / (1.0 + math.exp(-logit)))
        return replace(det, landmarks=five, dense=mesh, depth=depth, mesh_score=score)


# ---------------------------------------------------------------------------- mediapipe


class MediapipeUnavailable(RuntimeError):
    pass


DEFAULT_MEDIAPIPE_PYTHON = ".venv-mediapipe/bin/python"


class MediapipeDetector:
    """MediaPipe 0.10.21 in a worker process (see :mod:`neopain.faces.mediapipe_worker`).

    Frames go to the worker over its stdin (a 12-byte header ``b"NPF1"``,
    height, width as uint32 little-endian, then the RGB bytes); it answers one
    JSON line per frame with boxes, scores, 5 points and 468 mesh points in
    the frame's pixels.  Its first line reports the mediapipe version and the
    sha256 of the ``.tflite`` models it loaded from the wheel.
    """

    name = "mediapipe"
    score_defaults = (0.5, 0.6)

    def __init__(self, python: str | os.PathLike | None = None, model_selection: int = 1,
                 min_detection_confidence: float = 0.3, mesh: bool = True,
                 device: str | None = None, timeout: float = 120.0):
        py = Path(python or os.environ.get("NEOPAIN_MEDIAPIPE_PYTHON")
                  or Path(__file__).resolve().parents[2] / DEFAULT_MEDIAPIPE_PYTHON)
        if not py.is_file():
            raise MediapipeUnavailable(
                f"mediapipe backend: interpreter {py} not found. mediapipe==0.10.21 needs its "
                "own environment (numpy<2, protobuf 4): create it with `make venv-mediapipe` "
                "(.venv-mediapipe) or `conda env create -f envs/mediapipe.yaml`, and set "
                "track.mediapipe.python to its python"
            )
        self.python = str(py)
        self.params = {"model_selection": int(model_selection),
                       "min_detection_confidence": float(min_detection_confidence),
                       "mesh": bool(mesh)}
        worker = Path(__file__).with_name("mediapipe_worker.py")
        self._proc = subprocess.Popen(
            [self.python, str(worker), json.dumps(self.params)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()
        hello = self._read_line()
        if hello.get("error"):
            self.close()
            raise MediapipeUnavailable(f"mediapipe worker ({self.python}): {hello['error']}")
        self._info = hello

    def _drain(self):
        for line in self._proc.stderr:  # keep the pipe from filling up
            self._stderr.append(line)
            del self._stderr[:-50]

    def _read_line(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            err = b"".join(self._stderr[-20:]).decode(errors="replace")
            raise MediapipeUnavailable(
                f"mediapipe worker ({self.python}) exited (rc={self._proc.poll()}): {err}")
        return json.loads(line)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "package": "mediapipe", "version": self._info.get("version"),
                "python": self.python, "weights": dict(self._info.get("weights", {})),
                "device": "cpu", "params": dict(self.params)}

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        try:
            self._proc.stdin.write(b"NPF1" + struct.pack("<II", h, w))
            self._proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._read_line()  # raises with the worker's stderr
        reply = self._read_line()
        if "error" in reply:
            raise RuntimeError(f"mediapipe worker: {reply['error']}")
        out = []
        for f in reply["faces"]:
            dense = np.asarray(f["mesh"], dtype=np.float64).reshape(-1, 2) if f.get("mesh") else None
            out.append(Detection(box=tuple(f["box"]), score=float(f["score"]),
                                 landmarks=np.asarray(f["five"], dtype=np.float64).reshape(5, 2),
                                 dense=dense))
        out.sort(key=lambda d: -d.score)
        return out

    def close(self):
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------- registry


def _blazeface(**params: Any):
    """:class:`neopain.faces.blazeface.BlazeFaceDetector` (imported here: it imports this module)."""
    from neopain.faces.blazeface import BlazeFaceDetector

    return BlazeFaceDetector(**params)


DETECTORS: dict[str, Any] = {
    "blazeface": _blazeface,
    "mtcnn": MTCNNDetector,
    "insightface": SCRFDDetector,
    "mediapipe": MediapipeDetector,
}


def make_detector(name: str, **params: Any):
    """Instantiate a detector from :data:`DETECTORS` by name."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; known detectors: {', '.join(sorted(DETECTORS))}"
        ) from None
    return cls(**params)
