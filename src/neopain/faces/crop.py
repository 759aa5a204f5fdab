"""Landmark-based face alignment and per-frame crop tables.

Template
    :data:`TEMPLATE_112` is the standard ArcFace / InsightFace 5-point
    template for 112x112 crops (``arcface_dst`` in insightface's
    ``face_align.py``): image-left eye, image-right eye, nose tip, left and
    right mouth corners, in pixel coordinates of a 112x112 image.
    :func:`template` scales it uniformly by ``size / 112`` (a square crop of
    any size with the same framing; at 224 the eyes sit at about
    (76.6, 103.4) and (147.1, 103.0)).  The framing is tight: the face from
    brows to chin fills the crop, the top of the forehead is cut.

Alignment
    :func:`align` estimates the least-squares similarity transform (rotation,
    uniform scale, translation; no reflection, no shear) mapping the five
    detected landmarks onto the template -- the closed-form Umeyama (1991)
    solution, the same as ``skimage.transform.SimilarityTransform`` -- and
    warps with ``cv2.warpAffine`` (bilinear) using a *constant black* border
    (``BORDER_CONSTANT``, value 0), as insightface's ``norm_crop`` does:
    pixels outside the frame are black rather than smeared edge pixels, which
    would otherwise look like structure to a feature extractor.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable

import cv2
import numpy as np
import pyarrow as pa

from neopain.faces.video import Frame, iter_frames

log = logging.getLogger(__name__)

__all__ = [
    "CROP_SCHEMA",
    "TEMPLATE_112",
    "align",
    "crop_video",
    "decode_jpeg",
    "encode_jpeg",
    "similarity_transform",
    "template",
    "transform_points",
]

TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_112.setflags(write=False)

CROP_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("jpeg", pa.binary(), nullable=False),
        pa.field("matrix", pa.list_(pa.float32(), 6), nullable=False),
        pa.field("landmarks", pa.list_(pa.float32(), 10), nullable=False),
    ]
)


def template(size: int = 224) -> np.ndarray:
    """The ArcFace 5-point template scaled to a ``size`` x ``size`` crop, (5, 2)."""
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    return TEMPLATE_112 * (float(size) / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform ``src -> dst`` (Umeyama), as a 2x3 matrix.

    Minimises ``sum |s R src_i + t - dst_i|^2`` over rotations ``R`` (no
    reflection), scales ``s > 0`` and translations ``t``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching (N>=2, 2) point arrays, got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate source points (all identical)")
    cov = d0.T @ s0 / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1.0
    R = U @ D @ Vt
    scale = float(np.trace(np.diag(S) @ D) / var_s)
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def transform_points(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(M, dtype=np.float64)[:, :2].T + np.asarray(M, dtype=np.float64)[:, 2]


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Align a face to the scaled ArcFace template.

    Returns ``(crop, M)``: ``crop`` is ``size`` x ``size`` x 3 uint8 (same
    channel order as ``rgb``), ``M`` the 2x3 float64 matrix mapping frame
    pixels to crop pixels.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks contain NaN/inf")
    M = similarity_transform(lm, template(size))
    crop = cv2.warpAffine(
        rgb,
        M,
        (int(size), int(size)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return crop, M


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 image -> JPEG bytes (OpenCV encodes BGR, converted here)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_GREY = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def decode_jpeg(b: bytes, reduce: int = 1, grey: bool = False) -> np.ndarray:
    """JPEG bytes -> HxWx3 uint8 RGB (HxW luma if ``grey``: libjpeg's Y channel, i.e.
    BT.601 grey, without decoding chroma); ``reduce`` in 1, 2, 4, 8 decodes at
    1/reduce of the size in libjpeg's DCT domain (much cheaper than decode + resize)."""
    if reduce not in _REDUCED:
        raise ValueError(f"reduce={reduce}: one of 1, 2, 4, 8")
    flag = (_REDUCED_GREY if grey else _REDUCED)[reduce]
    img = cv2.imdecode(np.frombuffer(b, dtype=np.uint8), flag)
    if img is None:
        raise ValueError("not a decodable JPEG")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _skip_bad_image(index: int, exc: Exception) -> None:
    log.warning("%s (frame %d skipped, as in the track)", exc, index)


def crop_video(
    path: str | os.PathLike,
    track_table: pa.Table,
    size: int = 224,
    jpeg_quality: int = 95,
    fps_for_images: float = 30.0,
    frames: Iterable[Frame] | None = None,
) -> pa.Table:
    """Re-stream a source and align every frame the track marks ``ok``.

    ``frames`` replaces decoding ``path``: the frames the tracker read, kept in memory
    (:mod:`neopain.faces.framepass`: track, crop and keyframes in one decode pass).

    The frames are matched to the track by index; a timestamp that differs
    from the track's (by more than 1 us) or an ok frame the source no longer
    has raises ``ValueError`` (the track belongs to another version of the
    source).  Decoding stops after the last ok frame, so a truncated source whose
    track kept the frames before the cut (status ``partial``) is cropped without
    reading the broken tail; a frame folder's unreadable images are skipped as the
    track skipped them.  A source with no ok frame (``error``, ``no_face``) is not
    decoded at all: its table is empty.
    """
    ok_rows: dict[int, tuple[float, np.ndarray]] = {}
    t = track_table.select(["frame", "timestamp", "ok", "landmarks"]).to_pydict()
    for frame, ts, ok, lm in zip(t["frame"], t["timestamp"], t["ok"], t["landmarks"]):
        if ok:
            if lm is None:
                raise ValueError(f"{path}: track frame {frame} is ok but has no landmarks")
            ok_rows[int(frame)] = (float(ts), np.asarray(lm, dtype=np.float64).reshape(5, 2))

    cols: dict[str, list[Any]] = {f.name: [] for f in CROP_SCHEMA}
    if ok_rows:
        last = max(ok_rows)
        source = frames if frames is not None else iter_frames(
            path, fps_for_images=fps_for_images, max_frames=last + 1,
            on_bad_image=_skip_bad_image)
        for fr in source:
            if fr.index > last:
                break
            row = ok_rows.get(fr.index)
            if row is None:
                continue
            ts, lm = row
            if abs(ts - fr.timestamp) > 1e-6:
                raise ValueError(
                    f"{path}: frame {fr.index} is at {fr.timestamp} s but the track says {ts} s;"
                    " the track was made from a different source"
                )
            crop, M = align(fr.image, lm, size)
            cols["frame"].append(fr.index)
            cols["timestamp"].append(fr.timestamp)
            cols["jpeg"].append(encode_jpeg(crop, jpeg_quality))
            cols["matrix"].append(M.astype(np.float32).ravel().tolist())
            cols["landmarks"].append(transform_points(M, lm).astype(np.float32).ravel().tolist())
        if len(cols["frame"]) != len(ok_rows):
            missing = sorted(set(ok_rows) - set(cols["frame"]))
            raise ValueError(
                f"{path}: the source ended before ok track frame(s) {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}"
            )
    log.info("%s: %d aligned crops of %dx%d", path, len(cols["frame"]), size, size)
    return pa.Table.from_pydict(cols, schema=CROP_SCHEMA)
