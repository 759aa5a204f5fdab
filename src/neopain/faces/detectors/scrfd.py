"""The ``insightface`` backend: SCRFD (insightface's detector, ONNX) run with onnxruntime.

Decoded here (strides 8/16/32, two anchors per cell, distance-to-box and -keypoint
regression, score threshold, NMS) exactly as insightface's ``SCRFD`` class does.  The
model directory is ``track.insightface.model_dir``; when it holds ``2d106det.onnx``
(insightface's buffalo_l pack) the 106-point landmarks are added as dense landmarks.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from neopain.core.provenance import sha256_file
from neopain.faces.detectors.detection import Detection, check_rgb, nms, package_version
from neopain.faces.detectors.onnx_session import find_model_file, ort_session

__all__ = ["SCRFDDetector"]


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
        self.det_path = find_model_file(model_dir, "insightface backend",
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
        self._sess, self._provider = ort_session(self.det_path, device, threads)
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
            self._lm_sess, _ = ort_session(self.lm_path, device, threads)
        self._centres: dict[tuple, np.ndarray] = {}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": "onnxruntime",
            "version": package_version("onnxruntime"),
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
        check_rgb(rgb)
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

