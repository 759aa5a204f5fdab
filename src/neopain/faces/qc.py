"""Per-video tracking QC montage (``results/qc/{video}.montage.png``).

Layout: a header with the video id, tracking success rate, status (and the error
message of a video that could not be read), a timeline of every frame coloured by
its tracking reason, then a grid of up to ``n_tiles`` aligned crops sampled evenly
over the tracked frames, each with its five landmarks (eyes green, nose blue, mouth
corners red), dense landmarks (white dots, when the backend gives them), frame
index and orientation.

:func:`summary_table` / :func:`summary_markdown` gather every video's QC record into
``results/qc/tracking.parquet`` and ``tracking.md`` (the videos that were not ok, the
subjects left out of the splits and why).

Privacy: infant video is protected health information.  With ``show_faces=False``
(the default, config ``report.show_faces``) no pixel of any frame is used: the
landmarks are drawn on a blank grey canvas.  With ``True`` the crops themselves are
shown under the landmarks; with ``"blurred"`` the crops are shrunk to
:data:`BLUR_CELLS` x :data:`BLUR_CELLS` pixels and smoothed back up, which keeps the
lighting and pose but no recognisable face.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from neopain.faces.crop import decode_jpeg, transform_points

__all__ = ["REASON_COLOURS", "faces_mode", "montage", "summary_markdown", "summary_table",
           "write_png"]

REASON_COLOURS = {  # RGB
    "ok": (40, 170, 60),
    "occluded": (240, 150, 20),
    "no_face": (200, 40, 40),
    "low_score": (150, 60, 170),
    "jump": (40, 90, 220),
}
SKIP_COLOUR = (150, 150, 150)
BLANK = 48  # grey level of the blank canvas
BLUR_CELLS = 6  # a blurred crop keeps this many cells per side (10 was still found by MTCNN)


def faces_mode(value) -> bool | str:
    """``report.show_faces`` as False, True or ``"blurred"`` (anything else: an error)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() == "blurred":
        return "blurred"
    raise ValueError(f"report.show_faces must be true, false or blurred, not {value!r}")


def blur(img: np.ndarray) -> np.ndarray:
    """A crop with no recognisable face: shrunk to BLUR_CELLS^2 cells, smoothed back."""
    size = img.shape[0]
    small = cv2.resize(img, (BLUR_CELLS, BLUR_CELLS), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(big, (0, 0), size / BLUR_CELLS / 2)


def _text(img, s, org, scale=0.45, colour=(255, 255, 255), thick=1):
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def montage(crops: pa.Table, track: pa.Table, qc: dict[str, Any],
            show_faces: bool | str = False,
            n_tiles: int = 16, tile: int = 160, cols: int = 4,
            crop_size: int = 224) -> np.ndarray:
    """The montage as an HxWx3 uint8 RGB image (see the module docstring)."""
    width = cols * tile
    n_rows_tiles = 0
    c = crops.to_pydict() if crops.num_rows else {"frame": []}
    n = len(c["frame"])
    pick = sorted(set(np.round(np.linspace(0, n - 1, min(n_tiles, n))).astype(int))) if n else []
    n_rows_tiles = (len(pick) + cols - 1) // cols
    header = 88
    out = np.full((header + max(1, n_rows_tiles) * tile, width, 3), 24, np.uint8)

    vid = qc.get("video_id", "")
    rate = qc.get("success_rate", 0.0) or 0.0
    _text(out, f"{vid}  tracked {qc.get('n_ok', 0)}/{qc.get('n_frames', 0)} "
               f"({100 * rate:.1f}%)  status {qc.get('status')}", (6, 18), 0.5)
    det = qc.get("detector", {}) or {}
    _text(out, f"detector {det.get('name')} on {det.get('device')}", (6, 36), 0.4,
          (200, 200, 200))
    if qc.get("error"):
        _text(out, str(qc["error"])[-100:], (6, 54), 0.35, (255, 120, 120))

    # timeline: one column band per frame, coloured by reason
    t = track.select(["reason", "mode"]).to_pydict() if track.num_rows else {"reason": []}
    m = len(t["reason"])
    if m:
        y0, y1 = 62, 82
        for i, (reason, mode) in enumerate(zip(t["reason"], t["mode"])):
            xa = int(i * width / m)
            xb = max(xa + 1, int((i + 1) * width / m))
            colour = SKIP_COLOUR if mode == "skip" else REASON_COLOURS.get(reason, SKIP_COLOUR)
            out[y0:y1, xa:xb] = colour

    if not pick:
        _text(out, "no tracked frame", (6, header + tile // 2), 0.6, (255, 120, 120))
        return out

    tr = track.select(["frame", "orientation", "dense_landmarks"]).to_pydict()
    by_frame = {f: (o, d) for f, o, d in zip(tr["frame"], tr["orientation"],
                                             tr["dense_landmarks"])}
    for k, i in enumerate(pick):
        r, col = divmod(k, cols)
        if show_faces == "blurred":
            img = blur(decode_jpeg(c["jpeg"][i]))
        elif show_faces is True:
            img = decode_jpeg(c["jpeg"][i])
        else:
            img = np.full((crop_size, crop_size, 3), BLANK, np.uint8)
        size = img.shape[0]
        M = np.asarray(c["matrix"][i], dtype=np.float64).reshape(2, 3)
        orient, dense = by_frame.get(c["frame"][i], (0, None))
        if dense is not None:
            for x, y in transform_points(M, np.asarray(dense).reshape(-1, 2)):
                if 0 <= x < size and 0 <= y < size:
                    cv2.circle(img, (int(x), int(y)), 1, (255, 255, 255), -1)
        lm = np.asarray(c["landmarks"][i], dtype=np.float64).reshape(5, 2)
        for j, (x, y) in enumerate(lm):
            colour = (0, 220, 0) if j < 2 else (60, 120, 255) if j == 2 else (230, 30, 30)
            cv2.circle(img, (int(round(x)), int(round(y))), 4, colour, -1, cv2.LINE_AA)
        img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        _text(img, f"#{c['frame'][i]} {orient}deg", (4, tile - 6), 0.4)
        out[header + r * tile: header + (r + 1) * tile, col * tile: (col + 1) * tile] = img
    return out


def write_png(rgb: np.ndarray, path: str | os.PathLike) -> None:
    """Write an RGB image as PNG atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    tmp = path.with_name(path.name + ".tmp-png")
    with open(tmp, "wb") as fh:
        fh.write(buf.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


SUMMARY_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("n_frames", pa.int64()), ("n_ok", pa.int64()),
    ("success_rate", pa.float64()), ("status", pa.string()), ("error", pa.string()),
    ("detector", pa.string()), ("montage", pa.string()),
    # added by issue 16 (existing columns unchanged):
    ("subject_id", pa.string()), ("frames_lost", pa.int64()), ("used", pa.bool_())])


def summary_table(rows: list[dict[str, Any]], samples, montages: dict[str, str]) -> pa.Table:
    """One row per video: tracking QC, its subject, frames lost, ``used`` (has an ok
    frame, so it reaches the feature tables)."""
    cols = {k: [r.get(k) for r in rows]
            for k in ("video_id", "n_frames", "n_ok", "success_rate", "status", "error",
                      "frames_lost")}
    cols["detector"] = [(r.get("detector") or {}).get("name") for r in rows]
    cols["montage"] = [montages.get(r.get("video_id")) for r in rows]
    cols["subject_id"] = [samples.loc[v, "subject_id"] if v in samples.index else None
                          for v in cols["video_id"]]
    cols["used"] = [int(r.get("n_ok") or 0) > 0 for r in rows]
    return pa.table({f.name: cols[f.name] for f in SUMMARY_SCHEMA}, schema=SUMMARY_SCHEMA)


def summary_markdown(table: pa.Table, samples) -> str:
    """Markdown: status counts, every video that is not ``ok``, subjects left out."""
    from neopain.core.samples import usable_subjects

    df = table.to_pandas()
    counts = df["status"].value_counts().to_dict()
    out = ["# Tracking QC", "",
           f"{len(df)} videos: " + ", ".join(f"{counts[k]} {k}" for k in sorted(counts)), "",
           "Statuses: `ok` (>= half the frames tracked), `low_success`, `partial` (part of "
           "the source unreadable: `frames_lost`; the frames read are used), `no_face`, "
           "`error` (nothing readable); `no_face` and `error` videos have no features.", ""]
    bad = df[df["status"] != "ok"]
    if len(bad):
        out += ["## Videos not ok", "",
                "| video | subject | status | frames ok / read | frames lost | used | problem |",
                "|---|---|---|---|---|---|---|"]
        for r in bad.itertuples():
            known = r.frames_lost == r.frames_lost and r.frames_lost is not None  # not NaN
            lost = int(r.frames_lost) if known else \
                ("unknown" if r.status in ("partial", "error") else "")
            problem = r.error if isinstance(r.error, str) else ""
            problem = problem.replace("|", "\\|")[:200]
            out.append(f"| {r.video_id} | {r.subject_id} | {r.status} | {r.n_ok} / "
                       f"{r.n_frames} | {lost} | {'yes' if r.used else 'no'} | {problem} |")
        out.append("")
    qc = {r.video_id: {"status": r.status, "n_ok": r.n_ok} for r in df.itertuples()}
    _, excluded = usable_subjects(samples, qc)
    out += ["## Subjects left out of the splits", ""]
    if len(excluded):
        out += ["| subject | label | videos | reason |", "|---|---|---|---|"]
        out += [f"| {r.subject_id} | {r.label} | {r.videos} | {r.reason} |"
                for r in excluded.itertuples()]
    else:
        out.append("none: every subject has a video with tracked frames")
    return "\n".join(out) + "\n"
