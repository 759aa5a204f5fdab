"""BlazeFace backend (neopain.faces.detectors.blazeface): anchors and decoding against known answers
(MediaPipe's graph options), real faces against MTCNN, the default tracker's config."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest

from _paths import REPO, WEIGHTS
from neopain.faces.detectors.blazeface import (FULL_RANGE, SHORT_RANGE, BlazeFaceDetector, decode, five_points,
                               ssd_anchors, weighted_nms)
from neopain.faces.mpmodels import FILES


@pytest.fixture(scope="module")
def blaze() -> BlazeFaceDetector:
    if not all((WEIGHTS / f).is_file() for f in (SHORT_RANGE.file, FULL_RANGE.file)):
        pytest.skip("BlazeFace models absent: run `make mesh-weights`")
    return BlazeFaceDetector(model_dir=WEIGHTS, threads=1)


@pytest.fixture(scope="module")
def mtcnn():
    pytest.importorskip("facenet_pytorch")
    from neopain.faces.detectors.mtcnn import MTCNNDetector

    return MTCNNDetector(max_side=None)


# ------------------------------------------------------------------ anchors / decoding


def test_short_range_anchors_follow_the_ssd_layout():
    a = ssd_anchors(SHORT_RANGE)
    assert a.shape == (896, 4) and np.all(a[:, 2:] == 1.0)  # fixed_anchor_size
    # stride 8: a 16x16 grid, 2 anchors per cell (scale + interpolated), row-major
    first = a[:512].reshape(16, 16, 2, 4)
    np.testing.assert_allclose(first[..., 0], ((np.arange(16) + 0.5) / 16)[None, :, None]
                               .repeat(16, 0).repeat(2, 2))
    np.testing.assert_allclose(first[..., 1], ((np.arange(16) + 0.5) / 16)[:, None, None]
                               .repeat(16, 1).repeat(2, 2))
    # three stride-16 layers share one 8x8 grid: 6 anchors per cell
    rest = a[512:].reshape(8, 8, 6, 4)
    np.testing.assert_allclose(rest[0, 0, :, :2], 0.0625)
    np.testing.assert_allclose(rest[7, 7, :, :2], 0.9375)
    np.testing.assert_allclose(rest[2, 5, 3, :2], [5.5 / 8, 2.5 / 8])


def test_full_range_anchors_one_per_cell():
    a = ssd_anchors(FULL_RANGE)
    assert a.shape == (2304, 4)
    np.testing.assert_allclose(a[0, :2], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[48 + 3, :2], [3.5 / 48, 1.5 / 48])
    np.testing.assert_allclose(a[-1, :2], [47.5 / 48, 47.5 / 48])


def test_decode_known_answer():
    """One anchor with known regressors: x-first order, offsets / 128 + anchor centre,
    sizes / 128, sigmoid scores; anchors below the floor are dropped."""
    anchors = ssd_anchors(SHORT_RANGE)
    raw = np.zeros((896, 16))
    logits = np.full(896, -20.0)
    i = 512 + 6 * (8 * 3 + 5) + 2          # stride-16 cell (row 3, col 5): centre (5.5/8, 3.5/8)
    raw[i, :4] = [12.8, -6.4, 32.0, 64.0]  # dx, dy, w, h in input pixels
    raw[i, 4:] = np.arange(12) - 6.0
    logits[i] = math.log(0.9 / 0.1)        # sigmoid -> 0.9
    boxes, kps, scores = decode(raw, logits, anchors, SHORT_RANGE, floor=0.5)
    assert len(scores) == 1
    xc, yc = 5.5 / 8 + 0.1, 3.5 / 8 - 0.05
    np.testing.assert_allclose(boxes[0], [xc - 0.125, yc - 0.25, xc + 0.125, yc + 0.25])
    np.testing.assert_allclose(scores[0], 0.9)
    np.testing.assert_allclose(kps[0, 0], [5.5 / 8 - 6 / 128, 3.5 / 8 - 5 / 128])
    np.testing.assert_allclose(kps[0, 5], [5.5 / 8 + 4 / 128, 3.5 / 8 + 5 / 128])
    # score clipping at +-100 keeps the sigmoid finite
    logits[i] = 1e6
    assert decode(raw, logits, anchors, SHORT_RANGE, floor=0.5)[2][0] == 1.0


def test_weighted_nms_averages_a_cluster():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.stack([np.full((6, 2), v) for v in (0.0, 3.0, 9.0)])
    scores = np.array([0.9, 0.6, 0.7])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert [round(s, 2) for _, _, s in out] == [0.9, 0.7]
    np.testing.assert_allclose(out[0][0], [0.4, 0, 10.4, 10])      # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(out[0][1], 1.2)
    np.testing.assert_allclose(out[1][0], boxes[2])


def test_five_points_keep_eyes_and_nose_and_centre_the_mouth():
    kp = np.array([[40, 50], [80, 50], [60, 70], [60, 90], [20, 60], [100, 60]], float)
    five = five_points(kp)
    np.testing.assert_allclose(five[:3], kp[:3])
    np.testing.assert_allclose(five[3:].mean(0), kp[3])
    width = five[4, 0] - five[3, 0]
    assert five[3, 1] == five[4, 1] == 90 and 0.8 < width / 40 < 0.86


# ------------------------------------------------------------------ real faces


def test_blazeface_matches_mtcnn_on_a_real_face(videos, blaze, mtcnn):
    from neopain.faces.video import iter_frames

    img = next(iter(iter_frames(videos / "single_face.mp4"))).image
    (ref,) = mtcnn.detect(img)
    eye_d = np.linalg.norm(ref.landmarks[1] - ref.landmarks[0])
    for where, dets in (("full", blaze.detect(img)), ("upscaled x2", [
            _scaled(d, 0.5) for d in blaze.detect(cv2.resize(img, (1280, 720)))])):
        assert len(dets) == 1, where
        d = dets[0]
        assert d.score >= FULL_RANGE.min_score_thresh
        x1, y1, x2, y2 = d.box
        assert np.all((ref.landmarks[:, 0] > x1) & (ref.landmarks[:, 0] < x2)
                      & (ref.landmarks[:, 1] > y1) & (ref.landmarks[:, 1] < y2)), where
        err = np.linalg.norm(d.landmarks - ref.landmarks, axis=1) / eye_d
        assert err[:3].max() < 0.15 and err[3:].max() < 0.25, (where, err)
        assert abs(d.size / ref.size - 1) < 0.2
    # the short-range model in an upright ROI two face sizes wide, as the tracker makes it
    cx, cy = ref.centre
    k = 128 / (2 * ref.size)
    A = np.array([[k, 0, 64 - k * cx], [0, k, 64 - k * cy]])
    (r,) = blaze.detect_roi(cv2.warpAffine(img, A, (128, 128)))
    assert r.score >= SHORT_RANGE.min_score_thresh
    back = _scaled(r, 1 / k, -A[:, 2] / k)
    err = np.linalg.norm(back.landmarks - ref.landmarks, axis=1) / eye_d
    assert err[:3].max() < 0.15 and err[3:].max() < 0.25, err


def test_blazeface_on_ckplus_faces(shared_data, blaze, mtcnn):
    """Grey CK+ frames (640x490) of several subjects: one face, eyes where MTCNN has them."""
    seqs = sorted((shared_data / "ckplus_sequences").glob("*/S*"))[::8][:5]
    assert len(seqs) >= 3
    for s in seqs:
        img = cv2.cvtColor(cv2.imread(str(sorted(s.glob("*.png"))[0])), cv2.COLOR_BGR2RGB)
        (ref,) = mtcnn.detect(img)[:1]
        d = blaze.detect(img)
        assert d, s.name
        eye_d = np.linalg.norm(ref.landmarks[1] - ref.landmarks[0])
        assert np.linalg.norm(d[0].landmarks[:2] - ref.landmarks[:2], axis=1).max() < 0.2 * eye_d


def test_no_face_gives_nothing(videos, blaze):
    from neopain.faces.video import iter_frames

    img = next(iter(iter_frames(videos / "no_face.mp4"))).image
    assert [d for d in blaze.detect(img) if d.score >= FULL_RANGE.min_score_thresh] == []
    assert blaze.detect(np.zeros((360, 640, 3), np.uint8)) == []


def _scaled(d, s, t=(0.0, 0.0)):
    from dataclasses import replace

    t = np.asarray(t, float)
    box = np.asarray(d.box).reshape(2, 2) * s + t
    return replace(d, box=tuple(box.ravel()), landmarks=d.landmarks * s + t)


# ------------------------------------------------------------------ files, config


def test_weights_are_verified(tmp_path, blaze):
    info = blaze.info()
    assert info["name"] == "blazeface" and info["package"] == "ai-edge-litert"
    assert info["weights"] == {f: FILES[f][1] for f in (SHORT_RANGE.file, FULL_RANGE.file)}
    for f in (SHORT_RANGE.file, FULL_RANGE.file):
        shutil.copy(WEIGHTS / f, tmp_path / f)
    bad = tmp_path / FULL_RANGE.file
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{FULL_RANGE.file}: sha256"):
        BlazeFaceDetector(model_dir=tmp_path)
    (tmp_path / SHORT_RANGE.file).unlink()
    with pytest.raises(FileNotFoundError, match="make mesh-weights"):
        BlazeFaceDetector(model_dir=tmp_path)


def test_default_config_builds_blazeface_with_mesh_mouth_corners(videos, blaze):
    import yaml

    from neopain.faces.detectors.facemesh import mesh_to_five
    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.track import track_video

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    det, ref = build_detector(cfg["track"])
    assert det.name == "blazeface" and ref is not None and ref.mouth_from_mesh
    table, qc = track_video(videos / "single_face.mp4", det, refiner=ref, max_frames=8,
                            smooth=False)
    assert qc["n_ok"] == 8
    assert set(qc["detector"]["weights"]) == {SHORT_RANGE.file, FULL_RANGE.file}
    d = table.to_pydict()
    lm = np.asarray(d["landmarks"][3]).reshape(5, 2)
    mesh = np.asarray(d["dense_landmarks"][3]).reshape(468, 2)
    # eyes and nose are BlazeFace's, the mouth corners the mesh's (points 61 and 291)
    np.testing.assert_allclose(lm[3:], mesh_to_five(mesh)[3:], atol=1e-3)
    assert np.linalg.norm(lm[:2] - mesh_to_five(mesh)[:2], axis=1).max() > 1e-3


def test_mesh_presence_check_rejects_a_drawn_face(videos, blaze):
    """BlazeFace fires on the cartoon of no_face.mp4; the face mesh's presence score
    (track.min_mesh_score, BlazeFace default 0.5) rejects it: status no_face."""
    import yaml

    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.trackparams import params_from_config
    from neopain.faces.track import track_video

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    det, ref = build_detector(cfg["track"])
    params = params_from_config(cfg["track"])
    _, qc = track_video(videos / "no_face.mp4", det, refiner=ref, params=params)
    assert qc["status"] == "no_face" and qc["n_ok"] == 0
    assert qc["params"]["min_mesh_score"] == 0.5
    from dataclasses import replace

    _, off = track_video(videos / "no_face.mp4", det, refiner=ref,
                         params=replace(params, min_mesh_score=0.0), max_frames=40)
    assert off["n_ok"] > 0          # without the check the drawn face is "tracked"
