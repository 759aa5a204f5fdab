"""The ``mtcnn`` backend: facenet-pytorch MTCNN, weights ``pnet.pt``/``rnet.pt``/``onet.pt``
inside the pinned wheel (hashed and checked against the loaded parameters).  Batched on
CUDA when present.  torch is imported only when the detector is built."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from neopain.core.provenance import sha256_file
from neopain.faces.detectors.detection import Detection, check_rgb, package_version

log = logging.getLogger(__name__)

__all__ = ["MTCNNDetector", "pick_device"]


def pick_device(device: str | None):
    """The torch device: ``None``/``"auto"`` is CUDA when present, else the CPU."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)



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
        self.device = pick_device(device)
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
        self._version = package_version("facenet-pytorch")
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
        check_rgb(rgb)
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

