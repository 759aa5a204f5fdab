"""The ``track`` stage's table (:data:`TRACK_SCHEMA`, one row per decoded frame) and a
source's tracking status (:func:`qc_status`).

Columns added to the original ones: ``orientation`` (int16, the clockwise rotation of the
frame in which the face is upright, multiple of 90), ``roll`` (float32, the face's in-plane
angle in degrees from its landmarks, clockwise positive), ``mode`` (``search``, ``roi``,
``full`` or ``skip``: how the frame was examined) and ``dense_landmarks`` (468 mesh or 106
points, x/y interleaved, original pixels; null when the backend has none), ``dense_depth``
(the mesh's z per point, same pixel scale; null without the face-mesh refiner) and
``mesh_score`` (its face-presence probability).  ``n_faces`` counts the faces of the
view(s) examined.

Reasons (column ``reason``): ``ok``; ``no_face`` (nothing found, no subject tracked -- also
the frames skipped by ``search_every`` while none is); ``low_score`` (faces, none at the
score threshold, no subject tracked); ``jump`` (faces, but not where the subject is);
``occluded`` (a subject is tracked, seen less than ``reacquire_after`` frames ago, and
nothing at ``min_score`` is found where it is: hands, blankets, turned away).  Rows of
rejected frames hold the rejected candidate (``ok`` false) or NaN / null.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from neopain.faces.detectors.detection import Detection
from neopain.faces.geometry import roll_degrees

__all__ = ["MODES", "REASONS", "STATUSES", "TRACK_SCHEMA", "qc_status", "rows_to_table"]

REASONS = ("ok", "no_face", "low_score", "jump", "occluded")
MODES = ("search", "roi", "full", "skip")

TRACK_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("score", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
        pa.field("x2", pa.float32()),
        pa.field("y2", pa.float32()),
        pa.field("landmarks", pa.list_(pa.float32(), 10)),
        pa.field("n_faces", pa.int16(), nullable=False),
        # added by issue 3 (appended: old readers selecting columns keep working)
        pa.field("orientation", pa.int16(), nullable=False),
        pa.field("roll", pa.float32()),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("dense_landmarks", pa.list_(pa.float32())),
        # added by issue 15: the face mesh's depth and face-presence probability
        pa.field("dense_depth", pa.list_(pa.float32())),
        pa.field("mesh_score", pa.float32()),
    ]
)

STATUSES = ("ok", "low_success", "partial", "no_face", "error")


def qc_status(n_frames: int, n_ok: int, error: str | None) -> str:
    """A source's tracking status, the first that applies:

    ``error``: no frame could be read; ``no_face``: frames read, no face tracked;
    ``partial``: faces tracked, but part of the source could not be read (a truncated
    video's tail, a frame folder's unreadable images: ``frames_lost``); ``ok``: at
    least half the frames tracked; ``low_success``: fewer.  ``error`` and ``no_face``
    sources have no crops and are left out downstream; ``partial`` ones are used with
    the frames that were read.
    """
    if error is not None and n_frames == 0:
        return "error"
    if n_ok == 0:
        return "no_face"
    if error is not None:
        return "partial"
    return "ok" if n_ok / n_frames >= 0.5 else "low_success"


def rows_to_table(rows: list[dict]) -> pa.Table:
    """The tracker's rows (dicts with the decided ``det``) as a :data:`TRACK_SCHEMA` table."""
    cols: dict[str, list] = {f.name: [] for f in TRACK_SCHEMA}
    for r in rows:
        d: Detection | None = r["det"]
        cols["frame"].append(r["frame"])
        cols["timestamp"].append(r["timestamp"])
        cols["ok"].append(r["ok"])
        cols["reason"].append(r["reason"])
        cols["n_faces"].append(r["n_faces"])
        cols["orientation"].append(r["orientation"])
        cols["mode"].append(r["mode"])
        if d is None:
            cols["score"].append(float("nan"))
            for k in ("x1", "y1", "x2", "y2"):
                cols[k].append(float("nan"))
            cols["landmarks"].append(None)
            cols["roll"].append(float("nan"))
            cols["dense_landmarks"].append(None)
            cols["dense_depth"].append(None)
            cols["mesh_score"].append(float("nan"))
        else:
            cols["score"].append(d.score)
            for k, v in zip(("x1", "y1", "x2", "y2"), d.box):
                cols[k].append(float(v))
            lm = np.asarray(d.landmarks, dtype=np.float32)
            cols["landmarks"].append(lm.ravel().tolist())
            cols["roll"].append(roll_degrees(lm))
            cols["dense_landmarks"].append(
                None if d.dense is None else np.asarray(d.dense, np.float32).ravel().tolist())
            cols["dense_depth"].append(
                None if d.depth is None else np.asarray(d.depth, np.float32).tolist())
            cols["mesh_score"].append(float("nan") if d.mesh_score is None else d.mesh_score)
    return pa.Table.from_pydict(cols, schema=TRACK_SCHEMA)
