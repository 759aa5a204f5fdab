"""The ``mediapipe`` backend: MediaPipe 0.10.21 face detection (BlazeFace full range) +
468-point face mesh, run by :mod:`neopain.faces.detectors.mediapipe_worker` in a separate
interpreter (``track.mediapipe.python``, default ``.venv-mediapipe/bin/python``: mediapipe
0.10.21 needs numpy<2 and protobuf 4, which the main environment cannot hold)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np

from neopain.faces.detectors.detection import REPO_ROOT, Detection, check_rgb

__all__ = ["DEFAULT_MEDIAPIPE_PYTHON", "MediapipeDetector", "MediapipeUnavailable"]


class MediapipeUnavailable(RuntimeError):
    pass


DEFAULT_MEDIAPIPE_PYTHON = ".venv-mediapipe/bin/python"


class MediapipeDetector:
    """MediaPipe 0.10.21 in a worker process (see :mod:`neopain.faces.detectors.mediapipe_worker`).

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
                  or REPO_ROOT / DEFAULT_MEDIAPIPE_PYTHON)
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
        check_rgb(rgb)
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

