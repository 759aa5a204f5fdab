"""Views of a frame and the geometry between them and the frame (the tracker's rotation).

The detector never sees the raw frame.  It sees a *view*: the frame warped by a known 2x3
matrix ``A`` (original pixels -> view pixels), and everything it finds is mapped back with
``A^-1`` into ORIGINAL frame pixels (landmarks keep their semantic order, so a similarity
transform to the template gives an upright crop).  Two kinds:

* *full* views: the frame downscaled so that its longer side is ``max_side``, then rotated
  by 0, 90, 180 or 270 degrees clockwise (exact ``cv2.rotate``);
* *ROI* views: a ``roi_size`` x ``roi_size`` square centred on the tracked face,
  ``roi_scale`` face sizes wide and rotated by the face's current roll so that the face is
  upright in it -- any in-plane angle, not only multiples of 90.

Also here: a face's roll from its five landmarks, the frame orientation that makes it
upright, and the box measures the tracker decides by (IoU, centre distance, merging).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import cv2
import numpy as np

from neopain.faces.detectors.detection import Detection, nms

__all__ = ["Views", "apply_affine", "centre_distance", "iou", "map_back", "merge_faces",
           "orientation_of", "roll_degrees", "roll_radians"]


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


def apply_affine(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by the 2x3 affine matrix ``M``."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ M[:, :2].T + M[:, 2]


def map_back(det: Detection, Ainv: np.ndarray) -> Detection:
    """A detection in view pixels -> original pixels (``Ainv``: view -> original)."""
    x1, y1, x2, y2 = det.box
    corners = apply_affine(Ainv, [[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    lo, hi = corners.min(0), corners.max(0)
    s = math.sqrt(abs(np.linalg.det(Ainv[:, :2])))
    size = det.size * s
    dense = None if det.dense is None else apply_affine(Ainv, det.dense)
    return Detection(box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                     score=det.score, landmarks=apply_affine(Ainv, det.landmarks), dense=dense,
                     face_size=size)


def roll_radians(landmarks: np.ndarray) -> float:
    """In-plane angle (radians) of a face from its 5 landmarks (eye line combined with
    the eyes-to-mouth axis), image y down."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    eyes = lm[1] - lm[0]
    mouth = 0.5 * (lm[3] + lm[4]) - 0.5 * (lm[0] + lm[1])  # eyes -> mouth, "down"
    # combine the eye line with the perpendicular of the face's vertical axis
    v = eyes / max(np.linalg.norm(eyes), 1e-9) + np.array([mouth[1], -mouth[0]]) / max(
        np.linalg.norm(mouth), 1e-9)
    return math.atan2(v[1], v[0])


def roll_degrees(landmarks: np.ndarray) -> float:
    """In-plane roll of a face from its 5 landmarks, degrees in (-180, 180], clockwise
    positive (image y down): 0 for an upright face, 90 when its top points right."""
    return math.degrees(roll_radians(landmarks))


def orientation_of(roll_deg: float) -> int:
    """The clockwise rotation (0/90/180/270) of the frame that makes such a face upright."""
    return int(round(-roll_deg / 90.0)) % 4 * 90


class Views:
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


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre_distance(prev: Detection, det: Detection) -> float:
    """Centre distance normalised by the previous face size."""
    (px, py), (cx, cy) = prev.centre, det.centre
    return math.hypot(cx - px, cy - py) / max(prev.size, 1e-6)


def merge_faces(dets: Iterable[Detection], thresh: float = 0.3) -> list[Detection]:
    """One detection per face (IoU > thresh merged, highest score kept)."""
    dets = list(dets)
    if len(dets) < 2:
        return dets
    boxes = np.array([d.box for d in dets])
    scores = np.array([d.score for d in dets])
    return [dets[i] for i in nms(boxes, scores, thresh)]
