"""MediaPipe 0.10.21 face detection + face mesh as a worker process.

Run by :class:`neopain.faces.detectors.mediapipe_client.MediapipeDetector` with the
interpreter of the mediapipe environment (``.venv-mediapipe``, ``envs/mediapipe.yaml``): it
imports only mediapipe, numpy and the standard library, never neopain.

Protocol: argv[1] is a JSON object of parameters.  The worker prints one JSON line
``{"version", "weights": {file: sha256}}`` (or ``{"error"}``), then for every frame
read from stdin (``b"NPF1"``, uint32 LE height, width, then height*width*3 RGB
bytes) one JSON line ``{"faces": [{"box", "score", "five", "mesh"}]}`` in frame
pixels.  EOF on stdin ends it.

Per face: BlazeFace (full range, ``model_selection=1``) gives the box, score and
six keypoints; a square crop of 1.6x the box, rotated so that BlazeFace's eyes are
level, goes to FaceMesh (static image mode, one face) for 468 points; the five
template points (eye centres, nose tip, mouth corners) come from the mesh, or from
BlazeFace's keypoints when the mesh finds nothing (mouth corners then placed
+-0.35 eye distance along the eye line from the mouth centre).
"""

import os
import sys

# This file sits beside neopain's own modules (onnx_session.py, ...): drop its folder from
# sys.path so that they cannot shadow the standard library in the worker.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]

import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import struct  # noqa: E402
from pathlib import Path  # noqa: E402

MESH_FIVE = ((33, 133, 159, 145), (263, 362, 386, 374), (1,), (61,), (291,))
MODEL_FILES = (
    "modules/face_detection/face_detection_full_range_sparse.tflite",
    "modules/face_detection/face_detection_short_range.tflite",
    "modules/face_landmark/face_landmark.tflite",
)


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_exact(stream, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf.extend(chunk)
    return bytes(buf)


def main():
    params = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    out = sys.stdout
    try:
        import cv2
        import mediapipe as mp
        import numpy as np
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.write(json.dumps({"error": f"cannot import mediapipe: {exc!r}"}) + "\n")
        out.flush()
        return 1
    root = Path(mp.__file__).resolve().parent
    weights = {Path(f).name: _sha(root / f) for f in MODEL_FILES if (root / f).is_file()}
    fd = mp.solutions.face_detection.FaceDetection(
        model_selection=int(params.get("model_selection", 1)),
        min_detection_confidence=float(params.get("min_detection_confidence", 0.3)))
    fm = None
    if params.get("mesh", True):
        fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                             refine_landmarks=False,
                                             min_detection_confidence=0.3)
    out.write(json.dumps({"version": mp.__version__, "weights": weights}) + "\n")
    out.flush()
    stdin = sys.stdin.buffer
    while True:
        head = _read_exact(stdin, 12)
        if head is None:
            return 0
        if head[:4] != b"NPF1":
            out.write(json.dumps({"error": "bad frame header"}) + "\n")
            out.flush()
            return 2
        h, w = struct.unpack("<II", head[4:])
        data = _read_exact(stdin, h * w * 3)
        if data is None:
            return 0
        img = np.frombuffer(data, np.uint8).reshape(h, w, 3)
        faces = []
        res = fd.process(img)
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            x1, y1 = bb.xmin * w, bb.ymin * h
            x2, y2 = x1 + bb.width * w, y1 + bb.height * h
            kp = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints])
            eye_l, eye_r, nose, mouth = kp[0], kp[1], kp[2], kp[3]
            ev = eye_r - eye_l
            five = np.stack([eye_l, eye_r, nose, mouth - 0.35 * ev, mouth + 0.35 * ev])
            mesh = None
            if fm is not None:
                theta = math.atan2(ev[1], ev[0])
                side = 1.6 * max(x2 - x1, y2 - y1)
                size = 256
                k = size / max(side, 1e-6)
                c, s = math.cos(-theta) * k, math.sin(-theta) * k
                cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
                A = np.array([[c, -s, 0.0], [s, c, 0.0]])
                A[:, 2] = size / 2 - A[:, :2] @ np.array([cx, cy])
                crop = cv2.warpAffine(img, A, (size, size), borderValue=0)
                r = fm.process(crop)
                if r.multi_face_landmarks:
                    pts = np.array([[p.x * size, p.y * size]
                                    for p in r.multi_face_landmarks[0].landmark])
                    Ai = cv2.invertAffineTransform(A)
                    mesh = pts @ Ai[:, :2].T + Ai[:, 2]
                    five = np.stack([mesh[list(ix)].mean(0) for ix in MESH_FIVE])
            faces.append({
                "box": [float(x1), float(y1), float(x2), float(y2)],
                "score": float(d.score[0]),
                "five": five.ravel().tolist(),
                "mesh": None if mesh is None else np.round(mesh, 2).ravel().tolist(),
            })
        out.write(json.dumps({"faces": faces}) + "\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
