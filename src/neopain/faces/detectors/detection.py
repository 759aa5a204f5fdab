"""What every face detector backend returns and promises (:class:`Detection`,
:class:`Detector`), and the small helpers they share.

A backend finds faces in an HxWx3 uint8 RGB image that is roughly upright (the tracker,
:mod:`neopain.faces.track`, takes care of rotation and scaling) and returns
:class:`Detection` objects in that image's pixels, with five landmarks in the ArcFace
template order: image-left eye, image-right eye, nose tip, image-left mouth corner,
image-right mouth corner (for an upright face: the subject's right eye first).
``info()`` records which package, model files (sha256) and device really ran.  Nothing
is ever downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["REPO_ROOT", "Detection", "Detector", "check_rgb", "default_weights_dir", "nms",
           "package_version"]

#: the repository (its ``resources/weights`` and ``.venv-mediapipe`` are looked up there)
REPO_ROOT = Path(__file__).resolve().parents[4]


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
    """A backend: ``detect`` (optionally ``detect_batch``, ``detect_roi``), ``info``, and
    optionally ``score_defaults`` / ``mesh_score_default`` (:mod:`neopain.faces.trackparams`)."""

    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...

    def info(self) -> dict[str, Any]: ...


def check_rgb(rgb: np.ndarray) -> None:
    """Refuse anything but an HxWx3 uint8 RGB image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")


def package_version(dist: str) -> str:
    """The installed version of a distribution (``"unknown"`` when absent), for ``info()``."""
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


def default_weights_dir(fname: str) -> Path | None:
    """The folder holding ``fname``: ``resources/weights`` in the working directory, else
    the repository's; None when neither has it."""
    return next((d for d in (Path("resources/weights"), REPO_ROOT / "resources" / "weights")
                 if (d / fname).is_file()), None)
