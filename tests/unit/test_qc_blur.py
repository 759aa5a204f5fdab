"""QC montages with `report.show_faces: blurred`: real CK+ faces (shared data) that MTCNN
finds in the montage with faces shown are no longer found once blurred; the setting is
validated."""

import cv2
import numpy as np
import pyarrow as pa
import pytest

from _crops import crops_table
from neopain.faces.qc import faces_mode, montage


def _faces(shared_data, n=8):
    folder = shared_data / "ckplus_sequences" / "disgust" / "S106_004"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent (shared CK+ sequences)")
    out = []
    for p in sorted(folder.glob("*.png"))[:n]:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        x0 = (w - h) // 2
        out.append(cv2.resize(img[:, x0:x0 + h], (224, 224), interpolation=cv2.INTER_AREA))
    return out


def _track(n):
    return pa.table({"frame": pa.array(range(n), pa.int32()),
                     "orientation": pa.array([0] * n, pa.int32()),
                     "dense_landmarks": pa.array([None] * n, pa.list_(pa.float32())),
                     "reason": pa.array(["ok"] * n), "mode": pa.array(["track"] * n)})


def _detected(img, mtcnn):
    from PIL import Image

    _, probs = mtcnn.detect(Image.fromarray(img))
    return 0 if probs is None else sum(p is not None and p >= 0.7 for p in probs)


def test_blurred_montage_has_no_detectable_face(shared_data):
    pytest.importorskip("facenet_pytorch")
    from facenet_pytorch import MTCNN

    faces = _faces(shared_data)
    crops, track = crops_table(faces), _track(len(faces))
    qc = {"video_id": "S106_004", "n_ok": len(faces), "n_frames": len(faces),
          "success_rate": 1.0, "status": "ok"}
    mtcnn = MTCNN(keep_all=True, device="cpu")
    shown = montage(crops, track, qc, show_faces=True, n_tiles=8)
    blurred = montage(crops, track, qc, show_faces="blurred", n_tiles=8)
    hidden = montage(crops, track, qc, show_faces=False, n_tiles=8)
    assert _detected(shown, mtcnn) >= 4                      # the faces are findable
    assert _detected(blurred, mtcnn) == 0                    # ... and gone when blurred
    assert not np.array_equal(blurred, hidden)               # lighting/pose kept
    assert faces_mode(False) is False and faces_mode("blurred") == "blurred"
    with pytest.raises(ValueError, match="report.show_faces must be true, false or blurred"):
        faces_mode("sometimes")
