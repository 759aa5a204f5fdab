"""Facial actions of pain from the 468-point face mesh (the ``actions`` stage).

Per tracked frame with a mesh (``dense_landmarks`` + ``dense_depth`` of the track
table), the mesh is brought to a canonical frontal pose by a 3-D similarity
Procrustes fit of expression-stable points (nose ridge, eye corners, side contour:
:data:`REFERENCE`; not the forehead, whose mesh points move with the brows) to a
reference face, which removes position, scale, roll, yaw and pitch; the fit's rotation
gives the head pose.  Descriptors named
after the NFCS item and action unit they stand for (:data:`DESCRIPTORS`, mesh
indices in docs/actions.md) are measured in that frame, as distances over the
inter-ocular distance (IOD, between the eye centres = midpoints of the eye
corners).  Wrinkle texture: mean gradient magnitude over mean grey level inside
mesh-placed patches of the aligned crop (:data:`PATCHES`).

Per-video baseline (default until subject baselines exist): every signal ``x`` with
pain direction ``s`` (+1: pain raises it) becomes an activation
``a = max(0, s*x - P_q(s*x))`` with ``P_q`` the video's own ``baseline_percentile``
(label-free, per video: transductive, documented).  ``pspi`` is the PSPI-like
composite ``a(brow lowering) + max(a(eye narrowing r), a(eye narrowing l)) +
a(nose-lip shortening)`` (AU4 + max(AU6, AU7)/AU43 + max(AU9, AU10)), in IOD units.
Video statistics of every activation: peak, p90, mean, share of frames above
``above`` and onset speed (largest rise over ``onset_window`` s, per s).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import cv2
import numpy as np
import pyarrow as pa

from neopain.features.keyframe_crops import keyframe_rows
from neopain.features.pose import pose_statistics
from neopain.features.tables import fixed_size_list

log = logging.getLogger(__name__)

#: reference face for the pose fit: the face mesh network's own mean face (its output
#: on a uniform grey crop, ``face_landmark.tflite`` of mediapipe 0.10.21), made exactly
#: left/right symmetric; x right (subject's left), y up, z towards the camera (the crop's
#: axes: the network's mean face is frontal, so yaw = pitch = roll = 0 there), IOD = 1.
#: Only points that stay put under expressions: the nose ridge below the eyes, the eye
#: corners and the side contour. The mesh's forehead and glabella points (10, 151, 9, 8,
#: 168 and the upper contour 109/338 ... 21/251) move with the brows (CK+ neutral -> apex,
#: in a fit without them: -0.03 to -0.06 IOD in anger and disgust, +0.03 to +0.12 in
#: surprise), so fitting them would absorb part of the brow movement being measured.
REFERENCE = {
    6: (0.0000, -0.2303, 0.3874), 197: (0.0000, -0.3137, 0.4651),
    195: (0.0000, -0.3891, 0.5487), 5: (0.0000, -0.4668, 0.6314),
    4: (0.0000, -0.5603, 0.6740),
    133: (-0.2879, -0.2289, 0.1043), 33: (-0.7121, -0.2218, 0.0361),
    127: (-1.0307, -0.2538, -0.6071), 234: (-1.0174, -0.4484, -0.6437),
    162: (-1.0303, -0.0469, -0.5021),
    362: (0.2879, -0.2289, 0.1043), 263: (0.7121, -0.2218, 0.0361),
    356: (1.0307, -0.2538, -0.6071), 454: (1.0174, -0.4484, -0.6437),
    389: (1.0303, -0.0469, -0.5021),
}
RIGID = tuple(REFERENCE)
_REF = np.array([REFERENCE[i] for i in RIGID])

# mesh index groups (subject's right = image-left in a frontal view)
EYE_R, EYE_L = (33, 133), (263, 362)                       # outer, inner corner
LIDS_R = ((159, 145), (158, 153), (160, 144))              # upper, lower lid pairs
LIDS_L = ((386, 374), (385, 380), (387, 373))
BROW_R = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
BROW_L = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
BROW_INNER = (55, 285)
NOSTRILS = (98, 327)
SUBNASALE, UPPER_LIP, LOWER_LIP = 2, 0, 17
LIP_INNER = (13, 14)
MOUTH_CORNERS = (61, 291)
CHIN = 152

#: name -> pain direction s (+1: pain raises the value, -1: lowers it, 0: contrast)
DESCRIPTORS = {
    "au4_brow_lower_r": 1, "au4_brow_lower_l": 1, "au4_brow_gap": -1,
    "au7_eye_aperture_r": -1, "au7_eye_aperture_l": -1,
    "au9_nostril_width": 1, "au10_nose_lip": -1,
    "au25_lip_gap": 1, "au26_jaw_drop": 1, "au20_mouth_width": 1, "au27_mouth_height": 1,
    "au12_lip_corner_r": 0, "au12_lip_corner_l": 0, "au17_lip_chin": -1,
}
#: wrinkle patches: name -> (centre definition, side in IOD)
PATCHES = {"tex_glabella": 0.35, "tex_nasolabial_r": 0.3, "tex_nasolabial_l": 0.3,
           "tex_crowsfeet_r": 0.25, "tex_crowsfeet_l": 0.25}
POSE = ("yaw", "pitch", "roll")
FRAME_FEATURES = tuple(DESCRIPTORS) + tuple(PATCHES) + ("pspi",)
STATS = ("peak", "p90", "mean", "above", "onset")
DEFAULTS = {"baseline_percentile": 10.0, "above": 0.02, "onset_window": 0.2,
            "texture": True, "patch_px": 24}


def params_for(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    p = {**DEFAULTS, **{k: v for k, v in dict(cfg or {}).items() if k in DEFAULTS}}
    if not 0 <= float(p["baseline_percentile"]) < 100:
        raise ValueError(f"actions.baseline_percentile must be in [0, 100), got "
                         f"{p['baseline_percentile']}")
    return p


def frame_features(params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The frame features in the tables: descriptors, textures (unless ``texture: false``)
    and ``pspi``."""
    tex = params_for(params)["texture"]
    return tuple(DESCRIPTORS) + (tuple(PATCHES) if tex else ()) + ("pspi",)


def direction(name: str) -> int:
    """Pain direction of a frame feature (+1 for texture and pspi, +1 for lip corners)."""
    return DESCRIPTORS.get(name, 1) or 1


# --------------------------------------------------------------------------- geometry


def to_model_space(xy: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Image pixels (x right, y down, z away from the camera) -> right-handed, y up."""
    return np.column_stack([xy[:, 0], -xy[:, 1], -np.asarray(z, dtype=np.float64)])


def procrustes(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (Umeyama, no reflection) with ``s R src + t ~ dst``: (s, R, t)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a)
    D = np.eye(src.shape[1])
    D[-1, -1] = np.sign(np.linalg.det(U @ Vt)) or 1.0
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / max((a ** 2).sum(), 1e-12))
    return s, R, md - s * R @ ms


def pose_angles(R: np.ndarray) -> tuple[float, float, float]:
    """Head yaw, pitch, roll (degrees) of the head rotation ``R`` (reference -> observed,
    model space): ``R = Rz(roll) Ry(yaw) Rx(pitch)``; yaw > 0 turns the face towards the
    image's right, pitch > 0 tilts it up, roll > 0 turns it anticlockwise on screen."""
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -R[2, 0]))))
    pitch = math.degrees(math.atan2(R[2, 1], R[2, 2]))
    roll = math.degrees(math.atan2(R[1, 0], R[0, 0]))
    return yaw, pitch, roll


def canonical(points: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(468, 3) model-space mesh -> (mesh in the reference frame, (yaw, pitch, roll))."""
    s, R, t = procrustes(points[list(RIGID)], _REF)
    return s * points @ R.T + t, pose_angles(R.T)


def _d(P: np.ndarray, i: int, j: int) -> float:
    return float(np.linalg.norm(P[i] - P[j]))


def descriptors(C: np.ndarray) -> dict[str, float]:
    """The :data:`DESCRIPTORS` of one canonical mesh (distances / IOD)."""
    er, el = C[list(EYE_R)].mean(0), C[list(EYE_L)].mean(0)
    iod = float(np.linalg.norm(er - el))
    out = {
        # brow height above the eye centre, negated: rises when the brow lowers
        "au4_brow_lower_r": -(C[list(BROW_R), 1].mean() - er[1]),
        "au4_brow_lower_l": -(C[list(BROW_L), 1].mean() - el[1]),
        "au4_brow_gap": _d(C, *BROW_INNER),
        "au7_eye_aperture_r": float(np.mean([_d(C, a, b) for a, b in LIDS_R])),
        "au7_eye_aperture_l": float(np.mean([_d(C, a, b) for a, b in LIDS_L])),
        "au9_nostril_width": _d(C, *NOSTRILS),
        "au10_nose_lip": _d(C, SUBNASALE, UPPER_LIP),
        "au25_lip_gap": _d(C, *LIP_INNER),
        "au26_jaw_drop": _d(C, SUBNASALE, CHIN),
        "au20_mouth_width": _d(C, *MOUTH_CORNERS),
        "au27_mouth_height": _d(C, UPPER_LIP, LOWER_LIP),
        "au12_lip_corner_r": C[MOUTH_CORNERS[0], 1] - C[SUBNASALE, 1],
        "au12_lip_corner_l": C[MOUTH_CORNERS[1], 1] - C[SUBNASALE, 1],
        "au17_lip_chin": _d(C, LOWER_LIP, CHIN),
    }
    return {k: float(v) / iod for k, v in out.items()}


def patch_centres(xy: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """Patch centre and IOD in the pixels of ``xy`` (468, 2) for :data:`PATCHES`."""
    er, el = xy[list(EYE_R)].mean(0), xy[list(EYE_L)].mean(0)
    iod = float(np.linalg.norm(er - el))
    out_r = xy[EYE_R[0]] + 0.2 * (xy[EYE_R[0]] - xy[EYE_L[0]]) / max(
        np.linalg.norm(xy[EYE_R[0]] - xy[EYE_L[0]]), 1e-9) * iod
    out_l = xy[EYE_L[0]] + 0.2 * (xy[EYE_L[0]] - xy[EYE_R[0]]) / max(
        np.linalg.norm(xy[EYE_L[0]] - xy[EYE_R[0]]), 1e-9) * iod
    return {
        "tex_glabella": (0.5 * (xy[9] + xy[168]), iod),
        "tex_nasolabial_r": (0.5 * (xy[129] + xy[MOUTH_CORNERS[0]]), iod),
        "tex_nasolabial_l": (0.5 * (xy[358] + xy[MOUTH_CORNERS[1]]), iod),
        "tex_crowsfeet_r": (out_r, iod),
        "tex_crowsfeet_l": (out_l, iod),
    }


def texture_energy(grey: np.ndarray, xy: np.ndarray, patch_px: int = 24) -> dict[str, float]:
    """Mean Sobel gradient magnitude / mean grey level in each mesh-placed patch, on a
    ``patch_px``^2 resampling (scale-free), upright in the face's eye-line frame."""
    er, el = xy[list(EYE_R)].mean(0), xy[list(EYE_L)].mean(0)
    ang = math.atan2(el[1] - er[1], el[0] - er[0])
    out = {}
    g = grey.astype(np.float32)
    for name, (c, iod) in patch_centres(xy).items():
        side = max(PATCHES[name] * iod, 1e-6)
        k = patch_px / side
        cs, sn = math.cos(-ang) * k, math.sin(-ang) * k
        A = np.array([[cs, -sn, 0.0], [sn, cs, 0.0]])
        A[:, 2] = patch_px / 2 - A[:, :2] @ c
        p = cv2.warpAffine(g, A, (patch_px, patch_px), flags=cv2.INTER_AREA if k < 1
                           else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        gx = cv2.Sobel(p, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(p, cv2.CV_32F, 0, 1, ksize=3)
        out[name] = float(np.sqrt(gx * gx + gy * gy).mean() / max(float(p.mean()), 1.0))
    return out


def frame_actions(xy: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """Descriptors and pose of one mesh in image pixels (468, 2) + depth (468,)."""
    C, (yaw, pitch, roll) = canonical(to_model_space(np.asarray(xy, np.float64), z))
    return {**descriptors(C), "yaw": yaw, "pitch": pitch, "roll": roll}


# --------------------------------------------------------------------------- per video


def activation(x: np.ndarray, s: int, q: float, relative: bool = False) -> np.ndarray:
    """``max(0, s*x - P_q(s*x))`` over the finite values (NaN stays NaN); ``relative``
    divides by the baseline level (texture)."""
    v = s * np.asarray(x, np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return np.full_like(v, np.nan)
    base = float(np.percentile(v[ok], q))
    a = np.maximum(v - base, 0.0)
    if relative:
        a = a / max(abs(base), 1e-9)
    return np.where(ok, a, np.nan)


def pspi(cols: Mapping[str, np.ndarray], q: float) -> np.ndarray:
    """PSPI-like composite per frame (see the module docstring)."""
    brow = activation(0.5 * (cols["au4_brow_lower_r"] + cols["au4_brow_lower_l"]), 1, q)
    eye = np.fmax(activation(cols["au7_eye_aperture_r"], -1, q),
                  activation(cols["au7_eye_aperture_l"], -1, q))
    nose = activation(cols["au10_nose_lip"], -1, q)
    return brow + eye + nose


def video_actions(track: pa.Table, crops: pa.Table | None,
                  params: Mapping[str, Any] | None = None) -> pa.Table:
    """The readable per-frame actions table of one video (one row per tracked frame with
    a mesh): frame, timestamp, mesh_score, :data:`FRAME_FEATURES`, yaw/pitch/roll."""
    p = params_for(params)
    want = ["frame", "timestamp", "ok", "dense_landmarks", "dense_depth", "mesh_score"]
    t = track.select([c for c in want if c in track.column_names]).to_pydict()
    for c in want[3:]:  # a track table from before the face mesh: no 3-D mesh, no rows
        t.setdefault(c, [None] * track.num_rows)
    crop_by_frame: dict[int, tuple] = {}
    if crops is not None and p["texture"]:
        c = crops.select(["frame", "jpeg", "matrix"]).to_pydict()
        crop_by_frame = {f: (j, m) for f, j, m in zip(c["frame"], c["jpeg"], c["matrix"])}
    rows: list[dict] = []
    for i, f in enumerate(t["frame"]):
        d, z = t["dense_landmarks"][i], t["dense_depth"][i]
        if not t["ok"][i] or d is None or z is None or len(d) != 936 or len(z) != 468:
            continue
        xy = np.asarray(d, np.float64).reshape(468, 2)
        r = {"frame": f, "timestamp": t["timestamp"][i],
             "mesh_score": t["mesh_score"][i], **frame_actions(xy, np.asarray(z))}
        tex = dict.fromkeys(PATCHES, float("nan"))
        if f in crop_by_frame:
            jpeg, m = crop_by_frame[f]
            grey = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise ValueError(f"frame {f}: crop is not a decodable JPEG")
            M = np.asarray(m, np.float64).reshape(2, 3)
            tex = texture_energy(grey, xy @ M[:, :2].T + M[:, 2], int(p["patch_px"]))
        r.update(tex)
        rows.append(r)
    names = tuple(DESCRIPTORS) + tuple(PATCHES)
    cols = {k: np.array([r[k] for r in rows], np.float64) for k in names + POSE}
    cols["pspi"] = pspi(cols, float(p["baseline_percentile"])) if rows else np.zeros(0)
    out = {"frame": pa.array([r["frame"] for r in rows], pa.int32()),
           "timestamp": pa.array([r["timestamp"] for r in rows], pa.float64()),
           "mesh_score": pa.array([r["mesh_score"] for r in rows], pa.float32())}
    for k in FRAME_FEATURES + POSE:
        out[k] = pa.array(cols[k], pa.float32())
    return pa.table(out)


def video_statistics(actions: pa.Table, params: Mapping[str, Any] | None = None
                     ) -> tuple[np.ndarray, list[str]]:
    """:data:`STATS` of every frame feature's activation (per-video baseline)."""
    p = params_for(params)
    cols = {k: np.asarray(actions.column(k).to_pylist(), np.float64) for k in frame_features(p)}
    return statistics(cols, np.asarray(actions.column("timestamp").to_pylist(), np.float64), p)


def statistics(cols: Mapping[str, np.ndarray], ts: np.ndarray,
               params: Mapping[str, Any] | None = None) -> tuple[np.ndarray, list[str]]:
    """:func:`video_statistics` of frame-feature columns ``cols`` (name -> values per
    frame, ``pspi`` included) at times ``ts``."""
    p = params_for(params)
    q, thr, win = float(p["baseline_percentile"]), float(p["above"]), float(p["onset_window"])
    ts = np.asarray(ts, np.float64)
    vals, names = [], []
    for k in frame_features(p):
        x = np.asarray(cols[k], np.float64)
        a = x if k == "pspi" else activation(x, direction(k), q, relative=k in PATCHES)
        ok = np.isfinite(a)
        if ok.sum() == 0:
            vals += [np.nan] * len(STATS)
        else:
            av, tv = a[ok], ts[ok]
            if len(av) >= 3:  # 3-frame median against single-frame mesh glitches
                av = np.median(np.stack([np.r_[av[:1], av[:-1]], av, np.r_[av[1:], av[-1:]]]), 0)
            j = np.searchsorted(tv, tv - win)
            onset = float(np.max((av - av[j]) / np.maximum(tv - tv[j], 1e-9) * (tv > tv[j]),
                                 initial=0.0))
            vals += [float(av.max()), float(np.percentile(av, 90)), float(av.mean()),
                     float((av > thr).mean()), onset]
        names += [f"{k}__{s}" for s in STATS]
    return np.asarray(vals, np.float64), names


def feature_tables(video_id: str, actions: pa.Table, keyframes: pa.Table | None,
                   params: Mapping[str, Any] | None = None) -> tuple[pa.Table, pa.Table]:
    """Per-video tables in extract's layout: ``f_frame`` (keyframes with finite
    descriptors; ``pose_frame`` their yaw/pitch/roll) and ``f_video`` (one row: the
    statistics; frame = the pspi peak; ``f_pose`` = ``pose_video`` the pose statistics of
    :mod:`neopain.features.pose`, the pose-only table and the pose of the video row)."""
    names = frame_features(params)
    frames = np.asarray(actions.column("frame").to_pylist(), np.int64)
    X = np.column_stack([np.asarray(actions.column(k).to_pylist(), np.float64)
                         for k in names]) if len(frames) else np.zeros((0, len(names)))
    keep = np.isfinite(X).all(1)
    if keyframes is not None:
        keyframe = np.zeros(len(frames), bool)
        keyframe[keyframe_rows(actions, keyframes)] = True
        keep &= keyframe
    ts = np.asarray(actions.column("timestamp").to_pylist(), np.float64)
    P = (np.column_stack([np.asarray(actions.column(k).to_pylist(), np.float64)
                          for k in POSE]) if len(frames) else np.zeros((0, 3)))
    frame_t = pa.table({
        "video_id": pa.array([video_id] * int(keep.sum()), pa.string()),
        "frame": pa.array(frames[keep], pa.int32()),
        "timestamp": pa.array(ts[keep], pa.float64()),
        "f_frame": fixed_size_list(X[keep].astype(np.float32)),
        "pose_frame": fixed_size_list(P[keep].astype(np.float32)),
    })
    stats, _ = video_statistics(actions, params)
    pstats = pose_statistics(P)
    rows = 1 if len(frames) and np.isfinite(stats).all() else 0
    pk = int(np.nanargmax(X[:, -1])) if rows else 0  # the pspi peak
    pose_v = fixed_size_list(pstats[None].astype(np.float32)[:rows])
    video_t = pa.table({
        "video_id": pa.array([video_id] * rows, pa.string()),
        "frame": pa.array([int(frames[pk])] if rows else [], pa.int32()),
        "timestamp": pa.array([float(ts[pk])] if rows else [], pa.float64()),
        "f_video": fixed_size_list(stats[None].astype(np.float32)[:rows]),
        # the pose-only table (actions/pose) and the pose of the video rows
        "f_pose": pose_v, "pose_video": pose_v,
    })
    return frame_t, video_t


def feature_names(layer: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """Column names of the ``frame`` or ``video`` feature table's ``features``."""
    if layer == "frame":
        return list(frame_features(params))
    if layer == "pose":
        from neopain.features.pose import pose_names
        return pose_names()
    return [f"{k}__{s}" for k in frame_features(params) for s in STATS]
