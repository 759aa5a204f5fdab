"""The detector backends by name (:data:`DETECTORS`) and the tracker's detector and landmark
refiner built from the ``track`` config section (:func:`build_detector`).

Every backend honours :class:`~neopain.faces.detectors.detection.Detector` (roughly upright
RGB in, :class:`~neopain.faces.detectors.detection.Detection` in that image's pixels out,
five landmarks in template order; ``info()`` says what really ran; nothing is downloaded).

Backends (``track.detector`` in config.yaml):

``blazeface`` (default)
    MediaPipe's BlazeFace, short range (ROI views) and full range sparse (whole
    frames), from the pinned mediapipe wheel, run by ``ai-edge-litert`` in this
    environment: :mod:`neopain.faces.detectors.blazeface`.
``mtcnn``
    facenet-pytorch MTCNN: :mod:`neopain.faces.detectors.mtcnn`.
``insightface``
    SCRFD (ONNX, onnxruntime), optionally with 106-point landmarks:
    :mod:`neopain.faces.detectors.scrfd`.
``mediapipe``
    MediaPipe 0.10.21 face detection + face mesh in its own interpreter:
    :mod:`neopain.faces.detectors.mediapipe_client`.

Landmark refiner (``track.landmarks: facemesh``, the default): the 468-point face mesh on
every accepted face, :mod:`neopain.faces.detectors.facemesh`.
"""

from __future__ import annotations

import os
from typing import Any

from neopain.faces.detectors.blazeface import BlazeFaceDetector
from neopain.faces.detectors.facemesh import FaceMeshRefiner
from neopain.faces.detectors.mediapipe_client import MediapipeDetector
from neopain.faces.detectors.mtcnn import MTCNNDetector
from neopain.faces.detectors.scrfd import SCRFDDetector

__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "build_detector", "make_detector"]

DEFAULT_DETECTOR = "blazeface"


DETECTORS: dict[str, Any] = {
    "blazeface": BlazeFaceDetector,
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
