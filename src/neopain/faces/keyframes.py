"""Keyframe selection: drop near-duplicate aligned face crops.

Rule (deterministic, documented in docs/tracking.md):

1. Each aligned crop is reduced to a grey ``thumb_size`` x ``thumb_size``
   thumbnail (area interpolation), values in [0, 1]; its five landmarks in crop
   coordinates are divided by the crop size.
2. The first crop of the video is a keyframe.  Every later crop is compared
   with the *last kept* keyframe by

   * ``pixels``: the mean absolute difference of their thumbnails (``diff``),
   * ``landmarks``: the mean Euclidean distance of their normalised crop
     landmarks (``landmark_diff``; in an aligned crop the landmarks move with
     expression -- mouth corners, eyes -- not with head pose),

   and it becomes a keyframe when the ``method``'s measure reaches its
   threshold (``threshold`` for pixels, ``landmark_threshold`` for landmarks;
   method ``either``: when either does).  Crops closer than that to the last
   keyframe are treated as near-duplicates of it.
3. When ``max_per_video`` > 0 and more keyframes were kept, an evenly spaced
   subset of them (by rank, first and last included) is retained.

The output lists every aligned frame with its difference to the last
keyframe at the time it was seen and whether it was kept, so the choice can
be audited.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

from neopain.faces.crop import decode_jpeg

KEYFRAME_SCHEMA = pa.schema(
    [
        ("frame", pa.int32()),
        ("timestamp", pa.float64()),
        ("diff", pa.float32()),
        ("keep", pa.bool_()),
        ("landmark_diff", pa.float32()),
    ]
)


def thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


METHODS = ("pixels", "landmarks", "either")


def select_keyframes(
    crops: pa.Table, threshold: float = 0.02, thumb_size: int = 64, max_per_video: int = 0,
    method: str = "pixels", landmark_threshold: float = 0.01,
) -> pa.Table:
    """Choose keyframes from a crop table (see the module docstring)."""
    if threshold < 0 or landmark_threshold < 0:
        raise ValueError(f"keyframes thresholds must be >= 0, got {threshold}, "
                         f"{landmark_threshold}")
    if method not in METHODS:
        raise ValueError(f"keyframes.method must be one of {METHODS}, got {method!r}")
    frames = crops.column("frame").to_pylist()
    stamps = crops.column("timestamp").to_pylist()
    jpegs = crops.column("jpeg")
    lms = crops.column("landmarks").to_pylist()
    diffs: list[float] = []
    ldiffs: list[float] = []
    keep: list[bool] = []
    last = last_lm = None
    for i in range(len(frames)):
        img = decode_jpeg(jpegs[i].as_py())
        thumb = thumbnail(img, thumb_size)
        lm = np.asarray(lms[i], dtype=np.float64).reshape(-1, 2) / img.shape[0]
        if last is None:
            d = ld = float("nan")
            k = True
        else:
            d = float(np.mean(np.abs(thumb - last)))
            ld = float(np.mean(np.linalg.norm(lm - last_lm, axis=1)))
            by_px, by_lm = d >= threshold, ld >= landmark_threshold
            k = by_px if method == "pixels" else by_lm if method == "landmarks" else (
                by_px or by_lm)
        if k:
            last, last_lm = thumb, lm
        diffs.append(d)
        ldiffs.append(ld)
        keep.append(k)
    kept = [i for i, k in enumerate(keep) if k]
    if max_per_video and len(kept) > max_per_video:
        pick = np.unique(np.round(np.linspace(0, len(kept) - 1, max_per_video)).astype(int))
        chosen = {kept[j] for j in pick}
        keep = [i in chosen for i in range(len(keep))]
    return pa.table(
        {"frame": frames, "timestamp": stamps, "diff": diffs, "keep": keep,
         "landmark_diff": ldiffs},
        schema=KEYFRAME_SCHEMA,
    )
