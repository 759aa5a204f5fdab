"""Facial-action configurations as exportable, predictable models (docs/actions.md).

An artefact whose ``backbone.name`` is ``actions`` has no network of its own: its
features are computed from the tracker's 468-point face mesh exactly as the ``actions``
stage computes them (:mod:`neopain.features.actions`), so ``neopain predict`` needs only the
tracker (with ``track.landmarks: facemesh``; the mesh model's sha256 is pinned in
``backbone.weights_sha256`` and checked against the running refiner).

Exportable: the ``actions/frame`` table (per frame: the descriptors, wrinkle textures
and ``pspi`` of :func:`neopain.features.actions.frame_features`). On a new recording,
:func:`frame_feature_matrix` gives one row per tracked frame: the geometry and ``pspi``
from the mesh over the recording's own baseline percentile (as for a training video),
the textures from the frame's aligned crop after the same JPEG round trip as the crop
stage. The statistics tables (``actions/video``: :func:`neopain.features.actions.
video_statistics`; ``actions/pose``: :func:`neopain.features.pose.pose_statistics`) have
one row per recording; they are exportable as *video-level* models (the nested export)
only: :func:`block_statistics` makes the same row from a block of a new recording's
frames (the whole recording, an epoch or a window, treated as if it were a recording of
its own: its own baseline percentile, ``pspi`` and statistics).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from neopain.features import actions as A

EXPORTABLE_LAYERS = ("frame", "video", "pose")
#: tables of one statistics row per recording: video-level artefacts only
STATISTICS_LAYERS = ("video", "pose")


def check_exportable(backbone: str, layer: str, level: str = "video") -> None:
    """A clear error for an actions table that an artefact of ``level`` cannot score:
    the statistics tables summarise a recording, so a frame-level artefact cannot."""
    if backbone != "actions":
        return
    if layer not in EXPORTABLE_LAYERS:
        raise ValueError(f"actions/{layer}: not an actions table ({EXPORTABLE_LAYERS})")
    if level == "frame" and layer in STATISTICS_LAYERS:
        raise ValueError(
            f"actions/{layer}: a table of whole-recording statistics cannot be exported as "
            f"a model that scores frames; export it with export.configuration: nested (a "
            f"video-level artefact), or export actions/frame")


def is_exportable(backbone: str, layer: str) -> bool:
    """Whether the nested (video-level) export can take the table."""
    return backbone != "actions" or layer in EXPORTABLE_LAYERS


def frame_names(backbone: Mapping[str, Any]) -> list[str]:
    """The frame features a recording's mesh must give for the artefact's ``backbone``."""
    p = A.params_for(dict((backbone.get("cfg") or {}).get("actions") or {}))
    if backbone.get("layer", "frame") == "frame":
        return list(backbone.get("feature_names") or A.feature_names("frame", p))
    return A.feature_names("frame", p)


def block_statistics(FP: np.ndarray, ts: np.ndarray, rows, backbone: Mapping[str, Any],
                     with_pose: bool = False) -> np.ndarray:
    """The statistics row of the artefact's layer (``video`` or ``pose``) from the frame
    rows ``rows`` of ``FP`` (:func:`frame_feature_matrix`'s features with its pose
    appended) at times ``ts``: exactly the actions stage's row when ``rows`` are all the
    recording's frames with a mesh. ``pspi`` is recomputed over the block's own baseline
    percentile; values pass through float32 as in the stage's table. ``with_pose``: the
    pose statistics appended (pose regressed out at training)."""
    from neopain.features.pose import pose_statistics
    p = A.params_for(dict((backbone.get("cfg") or {}).get("actions") or {}))
    names = frame_names(backbone)
    B = np.asarray(FP, np.float64)[rows].astype(np.float32).astype(np.float64)
    P = B[:, len(names):]
    pose = pose_statistics(P)
    if backbone["layer"] == "pose":
        return pose
    cols = {k: B[:, j] for j, k in enumerate(names)}
    cols["pspi"] = (A.pspi(cols, float(p["baseline_percentile"])).astype(np.float32)
                    .astype(np.float64) if len(B) else np.zeros(0))
    stats, _ = A.statistics(cols, np.asarray(ts, np.float64)[rows], p)
    return np.concatenate([stats, pose]) if with_pose else stats


def actions_pipeline(study: Mapping[str, Any], layer: str, sources: Mapping[str, str],
                     features) -> dict[str, Any]:
    """The artefact settings of an actions table (the counterpart of
    :func:`neopain.deploy.study.study_pipeline` for a CNN backbone)."""
    from neopain.faces.mpmodels import MESH_FILE

    check_exportable("actions", layer)
    wkey = f"weights:{MESH_FILE}"
    if wkey not in sources:
        raise ValueError(f"{features}: its provenance names no {wkey!r} (the face mesh of "
                         "the tracker); cannot pin the model the actions were measured with")
    params = {k: v for k, v in A.params_for((study.get("actions") or {})).items()}
    names = A.feature_names(layer, params)
    return {
        "labels": list(study["labels"]), "positive_label": study["positive_label"],
        "fps_for_images": float(study["fps_for_images"]),
        "track": dict(study.get("track") or {}), "crop": dict(study.get("crop") or {}),
        "tracker_weights": {k[8:]: v for k, v in sources.items() if k.startswith("weights:")},
        "backbone": {"name": "actions", "layer": layer, "cfg": {"actions": params},
                     "weights_file": MESH_FILE, "weights_sha256": sources[wkey],
                     "input_size": 0, "dtype": "float32", "fast_decode": False,
                     "feature_names": names, "feature_dim": len(names)},
    }


def check_refiner(refiner, backbone: Mapping[str, Any]) -> None:
    """The running tracker must refine with the face mesh the artefact was trained with."""
    have = dict((refiner.info().get("weights") or {}) if refiner is not None else {})
    want = backbone["weights_sha256"]
    if have.get(backbone["weights_file"]) != want:
        raise ValueError(
            f"the actions model needs the face mesh {backbone['weights_file']} (sha256 "
            f"{want}) in the tracker (track.landmarks: facemesh, `make mesh-weights`); "
            f"the tracker here has {have or 'no face mesh'}")


def frame_feature_matrix(track: pa.Table, frames: Iterable | None,
                         backbone: Mapping[str, Any], crop_size: int = 224,
                         jpeg_quality: int = 95) -> tuple[np.ndarray, np.ndarray]:
    """(features, pose) per row of ``track``: the ``backbone["feature_names"]`` of the
    actions frame table (NaN rows: no mesh) and (yaw, pitch, roll).

    For a statistics layer, the frame features its statistics are made of.
    ``frames``: the recording's decoded frames (objects with ``index`` and ``image``, RGB),
    streamed once for the wrinkle textures (None: textures NaN, which a model imputes)."""
    from neopain.faces.crop import align, encode_jpeg, transform_points

    params = dict((backbone.get("cfg") or {}).get("actions") or {})
    p = A.params_for(params)
    names = frame_names(backbone)
    act = A.video_actions(track, None, {**p, "texture": False})
    rows = track.column("frame").to_pylist()
    pos = {int(f): i for i, f in enumerate(rows)}
    idx = np.array([pos[int(f)] for f in act.column("frame").to_pylist()], np.int64)
    X = np.full((len(rows), len(names)), np.nan)
    P = np.full((len(rows), len(A.POSE)), np.nan)
    for j, k in enumerate(names):
        if k not in A.PATCHES:
            X[idx, j] = act.column(k).to_numpy(zero_copy_only=False)
    for j, k in enumerate(A.POSE):
        P[idx, j] = act.column(k).to_numpy(zero_copy_only=False)
    tex = [j for j, k in enumerate(names) if k in A.PATCHES]
    if tex and frames is not None and len(idx):
        import cv2

        want = set(idx.tolist())
        cols = track.select(["landmarks", "dense_landmarks"]).to_pydict()
        last = max(int(rows[i]) for i in want)
        for fr in frames:
            if fr.index > last:
                break
            i = pos.get(int(fr.index))
            if i is None or i not in want:
                continue
            lm = np.asarray(cols["landmarks"][i], np.float64).reshape(5, 2)
            crop, M = align(fr.image, lm, crop_size)
            grey = cv2.imdecode(np.frombuffer(encode_jpeg(crop, jpeg_quality), np.uint8),
                                cv2.IMREAD_GRAYSCALE)
            dense = np.asarray(cols["dense_landmarks"][i], np.float64).reshape(468, 2)
            t = A.texture_energy(grey, transform_points(M, dense), int(p["patch_px"]))
            for j in tex:
                X[i, j] = t[names[j]]
    return X, P
