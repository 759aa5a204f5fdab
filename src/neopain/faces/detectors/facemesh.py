"""The landmark refiner (``track.landmarks: facemesh``, the default): MediaPipe's
468-point face mesh on an upright 192x192 crop of each detection (any backend, any roll).

``face_landmark.tflite`` taken from the pinned mediapipe wheel (:mod:`neopain.faces.mpmodels`)
run by ``ai-edge-litert`` (``backend: litert``), or the same network as ``FaceMesh.onnx``
run by onnxruntime (``backend: onnx``).  It sets ``dense`` (x, y), ``depth`` (z, same
pixel scale) and ``mesh_score``; with ``replace_five`` the five points become mesh-derived
ones, with ``mouth_from_mesh`` only the mouth corners (set for BlazeFace, which has none
of its own).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from neopain.core.provenance import sha256_file
from neopain.faces.detectors.detection import Detection, default_weights_dir, package_version
from neopain.faces.detectors.onnx_session import find_model_file, ort_session
from neopain.faces.geometry import roll_radians

__all__ = ["MESH_FIVE", "FaceMeshRefiner", "mesh_to_five"]


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
        self._sess, self.device = ort_session(path, device, threads)
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
            model_dir = default_weights_dir(fname)
            if model_dir is None:
                raise FileNotFoundError(
                    f"facemesh landmarks: {fname} is not in resources/weights; take it from "
                    "the pinned mediapipe wheel with `make mesh-weights` (or `python -m "
                    "neopain.faces.mpmodels DIR`) and/or set track.facemesh.model_dir")
        self.path = find_model_file(model_dir, "facemesh landmarks",
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
                "version": package_version(self._net.package),
                "weights": {self.path.name: self._digest}, "device": self._net.device,
                "params": {"replace_five": self.replace_five, "backend": self.backend,
                           "mouth_from_mesh": self.mouth_from_mesh}}

    def refine(self, rgb: np.ndarray, det: Detection) -> Detection:
        lm = np.asarray(det.landmarks, dtype=np.float64).reshape(5, 2)
        x1, y1, x2, y2 = det.box
        c = np.array([0.5 * (x1 + x2), 0.5 * (y1 + y2)])
        size = det.size * 1.5
        theta = roll_radians(lm)
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

