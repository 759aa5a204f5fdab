"""BlazeFace (MediaPipe's face detector) in the main environment, with ai-edge-litert.

Two models from the pinned ``mediapipe==0.10.21`` wheel (:mod:`neopain.faces.mpmodels`,
sha256-verified in ``resources/weights``), decoded here as MediaPipe's own graphs
(``mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt`` and
``face_detection.pbtxt``) configure their calculators:

* preprocessing (``ImageToTensorCalculator``): the image letterboxed into the model's
  square input keeping its aspect ratio (zero border, centred), RGB scaled to [-1, 1];
* anchors (``SsdAnchorsCalculator``): ``min_scale`` 0.1484375, ``max_scale`` 0.75,
  offsets 0.5, aspect ratio 1, ``fixed_anchor_size`` (every anchor 1 x 1);
  short range: 128x128 input, 4 layers of strides 8, 16, 16, 16 with an interpolated
  anchor per scale (``interpolated_scale_aspect_ratio`` 1) -> 16x16x2 + 8x8x6 = 896;
  full range (sparse): 192x192 input, 1 layer of stride 4, no interpolated anchor
  -> 48x48 = 2304;
* decoding (``TensorsToDetectionsCalculator``): 16 values per anchor in x-first order
  (``reverse_output_order``): box centre, width, height, then 6 keypoints (x, y), all
  divided by ``x_scale`` = ``y_scale`` = ``w_scale`` = ``h_scale`` = the input size and
  offset by the anchor centre; scores clipped to +-100 then sigmoid; kept at
  ``min_score_thresh`` (short 0.5, full 0.6);
* ``NonMaxSuppressionCalculator``: WEIGHTED, IoU > 0.3 (a cluster's box and keypoints
  are the score-weighted mean of its members, its score the best one).

When no anchor reaches the model's threshold the best candidates down to
``score_floor`` are still returned (same NMS), so the tracker can record *why* a frame
was rejected (``low_score``/``occluded``) with the candidate; its own thresholds
(``score_defaults``: 0.5 while tracking, 0.6 to start a track -- MediaPipe's) decide.

Keypoints: BlazeFace gives the subject's right eye, left eye, nose tip, mouth centre and
both ear tragions.  The tracker's five points (:mod:`neopain.faces.detectors.detection`:
image-left eye, image-right eye, nose, mouth corners) take the eyes and the nose as they
are; BlazeFace has no mouth corners, so they are *approximated* here from its mouth
centre, half the ArcFace template's mouth width (0.828 eye distances) to each side along
the eye line.
With the face mesh (``track.landmarks: facemesh``, the default) the tracker replaces
them by the mesh's mouth corners (points 61 and 291) on every accepted face
(:class:`~neopain.faces.detectors.facemesh.FaceMeshRefiner` ``mouth_from_mesh``).

:meth:`BlazeFaceDetector.detect` runs the full-range model (whole-frame search);
:meth:`BlazeFaceDetector.detect_roi` the short-range one (the tracker's upright
``roi_size`` view around a face, 2 face sizes wide -- the range it was trained for).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from neopain.core.provenance import sha256_file
from neopain.faces.detectors.detection import (Detection, check_rgb, default_weights_dir,
                                               package_version)

__all__ = ["BlazeFaceDetector", "ModelSpec", "SHORT_RANGE", "FULL_RANGE", "ssd_anchors",
           "decode", "weighted_nms", "five_points"]


@dataclass(frozen=True)
class ModelSpec:
    """One BlazeFace model and its graph's calculator options."""

    file: str
    size: int                   #: tensor_width = tensor_height
    strides: tuple[int, ...]    #: one per layer (num_layers = len(strides))
    interpolated_scale_aspect_ratio: float
    num_boxes: int
    min_score_thresh: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    fixed_anchor_size: bool = True
    num_coords: int = 16
    num_keypoints: int = 6
    score_clipping_thresh: float = 100.0
    nms_threshold: float = 0.3


SHORT_RANGE = ModelSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 896,
                        0.5)
FULL_RANGE = ModelSpec("face_detection_full_range_sparse.tflite", 192, (4,), 0.0, 2304, 0.6)

#: ArcFace template (neopain.faces.crop): mouth width / eye distance = 29.18 / 35.24
MOUTH_WIDTH_PER_EYE_DISTANCE = (70.7299 - 41.5493) / (73.5318 - 38.2946)


def _scale(spec: ModelSpec, i: int) -> float:
    n = len(spec.strides)
    if n == 1:
        return 0.5 * (spec.min_scale + spec.max_scale)
    return spec.min_scale + (spec.max_scale - spec.min_scale) * i / (n - 1.0)


def ssd_anchors(spec: ModelSpec) -> np.ndarray:
    """Anchors (x_centre, y_centre, w, h), normalised, in the model's output order
    (MediaPipe's ``SsdAnchorsCalculator``; layers of equal stride share one grid)."""
    out: list[tuple[float, float, float, float]] = []
    n = len(spec.strides)
    layer = 0
    while layer < n:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < n and spec.strides[last] == spec.strides[layer]:
            s = _scale(spec, last)
            for ar in spec.aspect_ratios:
                ratios.append(ar)
                scales.append(s)
            if spec.interpolated_scale_aspect_ratio > 0:
                s_next = 1.0 if last == n - 1 else _scale(spec, last + 1)
                scales.append(math.sqrt(s * s_next))
                ratios.append(spec.interpolated_scale_aspect_ratio)
            last += 1
        stride = spec.strides[layer]
        fh = fw = int(math.ceil(spec.size / stride))
        for y in range(fh):
            for x in range(fw):
                for s, ar in zip(scales, ratios):
                    xc, yc = (x + spec.anchor_offset) / fw, (y + spec.anchor_offset) / fh
                    if spec.fixed_anchor_size:
                        out.append((xc, yc, 1.0, 1.0))
                    else:
                        out.append((xc, yc, s * math.sqrt(ar), s / math.sqrt(ar)))
        layer = last
    return np.asarray(out, dtype=np.float64)


def decode(raw: np.ndarray, logits: np.ndarray, anchors: np.ndarray, spec: ModelSpec,
           floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (M, 4) xmin/ymin/xmax/ymax, keypoints (M, 6, 2), scores (M,))``,
    normalised to the input tensor, of the anchors scoring ``>= floor``."""
    raw = np.asarray(raw, np.float64).reshape(spec.num_boxes, spec.num_coords)
    c = spec.score_clipping_thresh
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64).reshape(-1), -c, c)))
    keep = np.flatnonzero(scores >= floor)
    r, a = raw[keep], anchors[keep]
    k = float(spec.size)  # x_scale = y_scale = w_scale = h_scale
    xc = r[:, 0] / k * a[:, 2] + a[:, 0]
    yc = r[:, 1] / k * a[:, 3] + a[:, 1]
    w = r[:, 2] / k * a[:, 2]
    h = r[:, 3] / k * a[:, 3]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kp = r[:, 4: 4 + 2 * spec.num_keypoints].reshape(-1, spec.num_keypoints, 2)
    kp = kp / k * a[:, None, 2:4] + a[:, None, 0:2]
    return boxes, kp, scores[keep]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    iy = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, thresh: float
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-maximum suppression: best first, every remaining
    detection overlapping it by IoU > ``thresh`` (itself included) joins its cluster,
    whose box and keypoints are the score-weighted mean; the score is the best one."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        iou = _iou(boxes[top], boxes[order])
        members = order[iou > thresh]
        if members.size == 0:  # degenerate box: keep it alone
            members = order[:1]
        wts = scores[members][:, None]
        box = (boxes[members] * wts).sum(0) / wts.sum()
        kp = (kps[members] * wts[:, :, None]).sum(0) / wts.sum()
        out.append((box, kp, float(scores[top])))
        order = order[~np.isin(order, members)]
    return out


def five_points(kp: np.ndarray) -> np.ndarray:
    """BlazeFace's 6 keypoints -> the tracker's 5 (mouth corners approximated; see the
    module docstring), (5, 2)."""
    kp = np.asarray(kp, np.float64).reshape(6, 2)
    eye_l, eye_r, nose, mouth = kp[0], kp[1], kp[2], kp[3]
    half = 0.5 * MOUTH_WIDTH_PER_EYE_DISTANCE * (eye_r - eye_l)
    return np.stack([eye_l, eye_r, nose, mouth - half, mouth + half])


def _letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """``(tensor (1, size, size, 3) in [-1, 1], scale, pad_x, pad_y)``: the image fitted
    into the square, centred, zero border (MediaPipe ``keep_aspect_ratio``)."""
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = rgb
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        img = cv2.resize(rgb, (nw, nh), interpolation=interp)
    px, py = (size - nw) // 2, (size - nh) // 2
    # BORDER_ZERO: black pixels around the image, i.e. -1 after the [-1, 1] scaling
    x = np.zeros((1, size, size, 3), np.float32)
    x[0, py: py + nh, px: px + nw] = img
    x *= 1.0 / 127.5
    x -= 1.0
    return x, nw / w, px, py


class _Net:
    def __init__(self, path: Path, spec: ModelSpec, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.spec = spec
        self.anchors = ssd_anchors(spec)
        if len(self.anchors) != spec.num_boxes:
            raise AssertionError(f"{len(self.anchors)} anchors != num_boxes {spec.num_boxes}")
        self._it = Interpreter(model_path=str(path), num_threads=threads)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()[0]
        if tuple(inp["shape"]) != (1, spec.size, spec.size, 3):
            raise ValueError(f"{path}: input {tuple(inp['shape'])}, expected "
                             f"(1, {spec.size}, {spec.size}, 3): not {spec.file}")
        self._inp = inp["index"]
        outs = {tuple(d["shape"]): d["index"] for d in self._it.get_output_details()}
        try:
            self._reg = outs[(1, spec.num_boxes, spec.num_coords)]
            self._cls = outs[(1, spec.num_boxes, 1)]
        except KeyError:
            raise ValueError(f"{path}: outputs {sorted(outs)} are not BlazeFace's "
                             f"({spec.num_boxes} boxes)") from None

    def __call__(self, rgb: np.ndarray, floor: float) -> list[tuple[np.ndarray, np.ndarray,
                                                                     float]]:
        """Detections in the image's pixels: (box x1 y1 x2 y2, keypoints (6, 2), score)."""
        spec = self.spec
        x, s, px, py = _letterbox(rgb, spec.size)
        self._it.set_tensor(self._inp, x)
        self._it.invoke()
        raw = self._it.get_tensor(self._reg)
        logits = self._it.get_tensor(self._cls)
        boxes, kps, scores = decode(raw, logits, self.anchors, spec, floor)
        if not len(scores):
            return []
        strong = scores >= spec.min_score_thresh
        if strong.any():  # exactly MediaPipe's detections
            boxes, kps, scores = boxes[strong], kps[strong], scores[strong]
        found = weighted_nms(boxes, kps, scores, spec.nms_threshold)
        off = np.array([px, py], np.float64)
        out = []
        for box, kp, score in found:
            b = (box.reshape(2, 2) * spec.size - off) / s
            out.append((b.ravel(), (kp * spec.size - off) / s, score))
        return out


def _model_dir(model_dir) -> Path:
    if model_dir is not None:
        return Path(model_dir).expanduser()
    found = default_weights_dir(SHORT_RANGE.file)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"blazeface: {SHORT_RANGE.file} is not in resources/weights; take the BlazeFace "
        "models from the pinned mediapipe wheel with `make mesh-weights` (or `python -m "
        "neopain.faces.mpmodels DIR`) and/or set track.blazeface.model_dir")


class BlazeFaceDetector:
    """BlazeFace short range (ROI views) + full range sparse (whole frames), LiteRT."""

    name = "blazeface"
    score_defaults = (0.5, 0.6)  #: MediaPipe's min_score_thresh: short range, full range
    #: face-mesh presence a face needs (MediaPipe Face Mesh's min_tracking_confidence):
    #: BlazeFace alone fires on drawn, face-like patterns (track.min_mesh_score)
    mesh_score_default = 0.5

    def __init__(self, model_dir: str | os.PathLike | None = None, threads: int | None = None,
                 score_floor: float = 0.3, device: str | None = None):
        from neopain.faces.mpmodels import FILES

        if not 0.0 <= score_floor <= SHORT_RANGE.min_score_thresh:
            raise ValueError(f"track.blazeface.score_floor must be in [0, "
                             f"{SHORT_RANGE.min_score_thresh}], got {score_floor}")
        d = _model_dir(model_dir)
        self.threads = int(threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1)
        self.score_floor = float(score_floor)
        self._weights: dict[str, str] = {}
        nets = {}
        for spec in (SHORT_RANGE, FULL_RANGE):
            path = d / spec.file
            if not path.is_file():
                raise FileNotFoundError(
                    f"blazeface: {path} not found; run `make mesh-weights` (the models of the "
                    f"pinned {FILES[spec.file][0]} member) or set track.blazeface.model_dir")
            digest = sha256_file(path)
            if digest != FILES[spec.file][1]:
                raise ValueError(f"{path}: sha256 {digest} != pinned {FILES[spec.file][1]} "
                                 "(the mediapipe==0.10.21 wheel's file)")
            self._weights[spec.file] = digest
            nets[spec.file] = _Net(path, spec, self.threads)
        self._short, self._full = nets[SHORT_RANGE.file], nets[FULL_RANGE.file]
        self.device = "cpu"

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "package": "ai-edge-litert",
                "version": package_version("ai-edge-litert"), "weights": dict(self._weights),
                "device": self.device,
                "params": {"score_floor": self.score_floor, "threads": self.threads,
                           "mouth_corners": "approximated from the mouth centre (template "
                                            "width); mesh points 61/291 with facemesh"}}

    def _dets(self, net: _Net, rgb: np.ndarray) -> list[Detection]:
        check_rgb(rgb)
        out = []
        for box, kp, score in net(rgb, self.score_floor):
            out.append(Detection(box=tuple(float(v) for v in box), score=score,
                                 landmarks=five_points(kp)))
        out.sort(key=lambda d: -d.score)
        return out

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces anywhere in an HxWx3 uint8 RGB image (full-range model), best first."""
        return self._dets(self._full, rgb)

    def detect_roi(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in a view around a face (short-range model: faces 1/7 to 3/4 of it)."""
        return self._dets(self._short, rgb)
