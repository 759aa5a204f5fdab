"""The other tracker backends on real models from ../shared/models: insightface SCRFD
(onnxruntime), the FaceMesh ONNX landmark refiner, mediapipe 0.10.21 (worker in its
own environment); their errors when the models or the environment are missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from _paths import REPO
from neopain.faces.detectors.facemesh import FaceMeshRefiner, mesh_to_five
from neopain.faces.detectors.mediapipe_client import MediapipeDetector, MediapipeUnavailable
from neopain.faces.detectors.scrfd import SCRFDDetector
from neopain.faces.detectors.registry import build_detector
from neopain.faces.track import track_video
from neopain.faces.video import iter_frames


@pytest.fixture(scope="module")
def frame0(videos):
    return next(iter(iter_frames(videos / "single_face.mp4"))).image


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------ insightface (SCRFD)


def test_insightface_missing_model_dir_names_expected_files(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(FileNotFoundError, match="track.insightface.model_dir"):
        SCRFDDetector(model_dir=None)
    with pytest.raises(FileNotFoundError) as err:
        SCRFDDetector(model_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "det_10g.onnx" in msg and "scrfd_500m_bnkps.onnx" in msg
    assert "Nothing is downloaded" in msg
    with pytest.raises(FileNotFoundError, match="track.insightface.model_dir"):
        build_detector({"detector": "insightface", "insightface": {"model_dir": str(tmp_path)}})


@pytest.mark.parametrize("model", ["scrfd_500m_bnkps.onnx", "scrfd_2.5g.onnx"])
def test_scrfd_detects_face_and_records_sha256(shared_models, frame0, model):
    pytest.importorskip("onnxruntime")
    mdir = shared_models / "insightface_scrfd"
    det = SCRFDDetector(model_dir=mdir, det_model=model)
    info = det.info()
    assert info["name"] == "insightface" and info["weights"] == {model: _sha(mdir / model)}
    faces = det.detect(frame0)
    assert len(faces) == 1 and faces[0].score > 0.5
    lm = faces[0].landmarks
    x1, y1, x2, y2 = faces[0].box
    assert lm.shape == (5, 2) and lm[0, 0] < lm[1, 0] and lm[2, 1] > lm[:2, 1].max()
    assert lm[3:, 1].min() > lm[2, 1]
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    with pytest.raises(ValueError, match="pinned"):
        SCRFDDetector(model_dir=mdir, det_model=model, sha256={model: "0" * 64})


def test_scrfd_tracks_the_rotated_infant(shared_models, videos):
    pytest.importorskip("onnxruntime")
    cfg = {"detector": "insightface",
           "insightface": {"model_dir": str(shared_models / "insightface_scrfd"),
                           "det_model": "scrfd_2.5g.onnx", "det_size": 480}}
    det, ref = build_detector(cfg)
    table, qc = track_video(videos / "infant_000056.mp4", det, max_frames=60)
    assert qc["success_rate"] >= 0.9, qc["reasons"]
    assert qc["detector"]["weights"]["scrfd_2.5g.onnx"]
    assert qc["orientations"]["90"] >= 0.9 * qc["n_ok"]


# ------------------------------------------------------------------ FaceMesh (ONNX)


def test_facemesh_refiner_gives_468_points_near_mtcnn(shared_models, frame0):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("facenet_pytorch")
    from neopain.faces.detectors.mtcnn import MTCNNDetector

    mdir = shared_models / "facemesh"
    ref = FaceMeshRefiner(model_dir=mdir, sha256=_sha(mdir / "FaceMesh.onnx"))
    assert ref.info()["weights"]["FaceMesh.onnx"] == _sha(mdir / "FaceMesh.onnx")
    (face,) = MTCNNDetector().detect(frame0)
    out = ref.refine(frame0, face)
    assert out.dense.shape == (468, 2)
    np.testing.assert_allclose(out.landmarks, mesh_to_five(out.dense))
    # the mesh's eye centres / nose / mouth corners agree with MTCNN's to a few % of the face
    err = np.linalg.norm(out.landmarks - face.landmarks, axis=1) / face.size
    assert err.max() < 0.12, err
    x1, y1, x2, y2 = face.box
    inside = ((out.dense[:, 0] > x1 - 10) & (out.dense[:, 0] < x2 + 10)
              & (out.dense[:, 1] > y1 - 30) & (out.dense[:, 1] < y2 + 10))
    assert inside.mean() > 0.95
    with pytest.raises(ValueError, match="pinned"):
        FaceMeshRefiner(model_dir=mdir, sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="track.facemesh.model_dir"):
        FaceMeshRefiner(model_dir=None)


def test_facemesh_dense_landmarks_in_track_table(shared_models, videos):
    pytest.importorskip("onnxruntime")
    cfg = {"detector": "mtcnn", "landmarks": "facemesh",
           "facemesh": {"model_dir": str(shared_models / "facemesh")}}
    det, ref = build_detector(cfg)
    table, qc = track_video(videos / "single_face.mp4", det, refiner=ref, max_frames=10)
    dense = table.column("dense_landmarks").to_pylist()
    assert qc["n_ok"] == 10 and all(len(x) == 936 for x in dense)
    assert qc["detector"]["refiner"]["name"] == "facemesh"


# ------------------------------------------------------------------ mediapipe (worker)


def test_mediapipe_missing_env_is_a_clear_error(tmp_path):
    with pytest.raises(MediapipeUnavailable, match="make venv-mediapipe"):
        MediapipeDetector(python=tmp_path / "nope" / "python")


@pytest.fixture(scope="module")
def mediapipe_python() -> Path:
    py = REPO / ".venv-mediapipe" / "bin" / "python"
    if not py.is_file():
        pytest.skip(f"mediapipe environment absent ({py}): create it with `make venv-mediapipe`")
    return py


def test_mediapipe_backend_tracks_with_468_points(mediapipe_python, videos):
    det = MediapipeDetector(python=mediapipe_python)
    try:
        info = det.info()
        assert info["version"] == "0.10.21"
        assert len(info["weights"]["face_landmark.tflite"]) == 64
        table, qc = track_video(videos / "single_face.mp4", det, max_frames=15)
        assert qc["success_rate"] >= 0.9
        d = table.to_pydict()
        assert all(len(x) == 936 for x, ok in zip(d["dense_landmarks"], d["ok"]) if ok)
        lm = np.array(d["landmarks"][0]).reshape(5, 2)
        assert lm[0, 0] < lm[1, 0] and lm[3:, 1].min() > lm[:2, 1].max()
    finally:
        det.close()
