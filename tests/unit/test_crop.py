"""Alignment to the ArcFace template, checked by re-detecting faces on the crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from neopain.faces.crop import (
    CROP_SCHEMA,
    TEMPLATE_112,
    align,
    crop_video,
    decode_jpeg,
    similarity_transform,
    template,
    transform_points,
)
from neopain.faces.video import iter_frames

SIZE = 224


@pytest.fixture(scope="module")
def single_face(shared_data: Path) -> Path:
    return shared_data / "videos" / "single_face.mp4"


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("facenet_pytorch")
    from neopain.faces.detectors.mtcnn import MTCNNDetector

    return MTCNNDetector()


@pytest.fixture(scope="module")
def frames(single_face):
    """Frames 0 (neutral) and 36 (smiling) of single_face.mp4."""
    return {f.index: f.image for f in iter_frames(single_face, max_frames=37) if f.index in (0, 36)}


# ------------------------------------------------------------------ template / transform


def test_template_scaling():
    assert TEMPLATE_112.shape == (5, 2)
    np.testing.assert_allclose(template(112), TEMPLATE_112)
    np.testing.assert_allclose(template(224), TEMPLATE_112 * 2)
    np.testing.assert_allclose(template(224)[0], [76.5892, 103.3926])
    with pytest.raises(ValueError):
        template(0)


def test_similarity_matches_skimage_and_recovers_known_transform():
    skt = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    dst = template(SIZE)
    for _ in range(5):
        angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 3)
        R = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        src = (dst - 50) @ R.T + rng.uniform(-100, 400, 2)
        src_noisy = src + rng.normal(0, 2, src.shape)
        M = similarity_transform(src_noisy, dst)
        ref = skt.SimilarityTransform.from_estimate(src_noisy, dst)
        np.testing.assert_allclose(M, ref.params[:2], atol=1e-8)
        # exact points -> exact inverse
        np.testing.assert_allclose(transform_points(similarity_transform(src, dst), src), dst, atol=1e-8)
    # uniform scale + rotation only: the 2x2 part is s*R
    A = M[:, :2]
    np.testing.assert_allclose(A @ A.T, np.eye(2) * np.linalg.det(A), atol=1e-9)
    assert np.linalg.det(A) > 0  # no reflection
    # mirrored landmarks: the best *proper* similarity, never a reflection
    mirrored = dst * [-1, 1] + [300, 0]
    Mm = similarity_transform(mirrored, dst)
    assert np.linalg.det(Mm[:, :2]) > 0
    np.testing.assert_allclose(
        Mm, skt.SimilarityTransform.from_estimate(mirrored, dst).params[:2], atol=1e-8
    )


def test_align_warps_pixels_where_matrix_says(frames):
    img = frames[0]
    lm = template(SIZE) * 1.5 + [100, 20]  # a face-sized, upright set of points
    crop, M = align(img, lm, SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    assert M.shape == (2, 3)
    Minv = cv2.invertAffineTransform(M)
    for u, v in [(10, 10), (100, 150), (200, 50)]:
        x, y = Minv @ [u, v, 1]
        np.testing.assert_allclose(crop[v, u].astype(int), img[round(y), round(x)].astype(int), atol=30)
    # border: constant black outside the frame
    crop_out, _ = align(img, template(SIZE) * 0.2 + [-40, -40], SIZE)
    assert crop_out[0, 0].tolist() == [0, 0, 0]  # maps to (-40, -40)
    assert crop_out[-1, -1].tolist() != [0, 0, 0]  # maps to (4.6, 4.6), inside


# ------------------------------------------------------------------ real faces


@pytest.mark.parametrize("index", [0, 36])
def test_aligned_crop_redetects_eyes_on_template(frames, detector, index):
    """Align a single_face.mp4 face, then run MTCNN again on the crop: its eyes
    must land within 6 px (at 224) of the template's eye points.

    The crop is framed tightly (the chin touches the bottom edge), which makes
    MTCNN's box -- and with it its landmarks -- unstable on the bare crop for
    some frames (up to ~13 px when smiling).  The crop is therefore re-detected
    with a black margin of a quarter of its size around it (no resampling: the
    crop's own pixels), and the margin subtracted.  The neutral frame is also
    checked on the bare crop.
    """
    img = frames[index]
    dets = detector.detect(img)
    assert len(dets) == 1
    crop, M = align(img, dets[0].landmarks, SIZE)
    T = template(SIZE)

    pad = SIZE // 4
    padded = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    again = detector.detect(padded)
    assert len(again) == 1 and again[0].score > 0.95
    eyes = again[0].landmarks[:2] - pad
    err = np.linalg.norm(eyes - T[:2], axis=1)
    assert err.max() <= 6.0, err

    if index == 0:
        bare = detector.detect(crop)
        assert len(bare) == 1
        err_bare = np.linalg.norm(bare[0].landmarks[:2] - T[:2], axis=1)
        assert err_bare.max() <= 6.0, err_bare


def test_transformed_landmarks_close_to_template(frames, detector):
    """Neutral frame: the five detected landmarks mapped into the crop are close
    to the template (eyes <= 3 px, RMS over all five <= 3 px at 224)."""
    lm = detector.detect(frames[0])[0].landmarks
    _, M = align(frames[0], lm, SIZE)
    res = np.linalg.norm(transform_points(M, lm) - template(SIZE), axis=1)
    assert res[:2].max() <= 3.0, res
    assert np.sqrt((res**2).mean()) <= 3.0, res


# ------------------------------------------------------------------ crop_video


def _track_table(src: Path, detector, n: int) -> pa.Table:
    from neopain.faces.track import track_video

    table, _ = track_video(src, detector, max_frames=n)
    return table


def test_crop_video_rows_jpeg_and_landmarks(single_face, detector):
    track = _track_table(single_face, detector, 8)
    # drop two frames from the track's ok set: they must not be cropped
    ok = track.column("ok").to_pylist()
    ok[2] = ok[5] = False
    track = track.set_column(track.schema.get_field_index("ok"), "ok", pa.array(ok))
    out = crop_video(single_face, track, size=SIZE, jpeg_quality=95)
    assert out.schema.equals(CROP_SCHEMA)
    want = [i for i, o in enumerate(ok) if o]
    assert out.column("frame").to_pylist() == want
    d = out.to_pydict()
    tr = track.to_pydict()
    frames = {f.index: f.image for f in iter_frames(single_face, max_frames=8)}
    for k, i in enumerate(want):
        assert d["timestamp"][k] == tr["timestamp"][i]
        img = decode_jpeg(d["jpeg"][k])
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        lm = np.array(tr["landmarks"][i], dtype=np.float64).reshape(5, 2)
        crop, M = align(frames[i], lm, SIZE)
        np.testing.assert_allclose(np.array(d["matrix"][k]).reshape(2, 3), M, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(
            np.array(d["landmarks"][k]).reshape(5, 2), transform_points(M, lm), atol=1e-3
        )
        # JPEG round trip keeps the channel order (RGB in, RGB out)
        diff = np.abs(img.astype(int) - crop.astype(int)).mean()
        swapped = np.abs(img.astype(int) - crop[:, :, ::-1].astype(int)).mean()
        assert diff < 3 and swapped > diff + 5
        assert img[..., 0].mean() > img[..., 2].mean()  # skin: more red than blue


def test_crop_video_rejects_track_from_other_source(single_face, detector):
    track = _track_table(single_face, detector, 3)
    ts = track.column("timestamp").to_pylist()
    bad = track.set_column(
        track.schema.get_field_index("timestamp"), "timestamp", pa.array([t + 0.5 for t in ts])
    )
    with pytest.raises(ValueError, match="different source"):
        crop_video(single_face, bad)
    # ok frames beyond the end of the source
    far = track.set_column(
        track.schema.get_field_index("frame"), "frame", pa.array([0, 1, 500], pa.int32())
    )
    with pytest.raises(ValueError, match="ended before"):
        crop_video(single_face, far)


def test_crop_video_no_ok_frames_gives_empty_table(single_face, detector):
    track = _track_table(single_face, detector, 2)
    none_ok = track.set_column(
        track.schema.get_field_index("ok"), "ok", pa.array([False] * track.num_rows)
    )
    out = crop_video(single_face, none_ok)
    assert out.num_rows == 0 and out.schema.equals(CROP_SCHEMA)


def test_decode_jpeg_rejects_garbage():
    with pytest.raises(ValueError):
        decode_jpeg(b"not a jpeg")
