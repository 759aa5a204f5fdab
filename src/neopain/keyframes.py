"""Keyframe selection: drop near-duplicate aligned face crops.

Rule (deterministic, documented in the README):

1. Each aligned crop is reduced to a grey ``thumb_size`` x ``thumb_size``
   thumbnail (area interpolation), values in [0, 1].
2. The first crop of the video is a keyframe.  Every later crop is compared
   with the *last kept* keyframe by the mean absolute difference of their
   thumbnails; it becomes a keyframe when that difference is at least
   ``threshold``.  Crops closer than that to the last keyframe are treated
   as near-duplicates of it.
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

from .crop import decode_jpeg

KEYFRAME_SCHEMA = pa.schema(
    [
        ("frame", pa.int32()),
        ("timestamp", pa.float64()),
        ("diff", pa.float32()),
        ("keep", pa.bool_()),
    ]
)


def thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def select_keyframes(
    crops: pa.Table, threshold: float = 0.02, thumb_size: int = 64, max_per_video: int = 0
) -> pa.Table:
    """Choose keyframes from a crop table (see the module docstring)."""
    if threshold < 0:
        raise ValueError(f"keyframes.threshold must be >= 0, got {threshold}")
    frames = crops.column("frame").to_pylist()
    stamps = crops.column("timestamp").to_pylist()
    jpegs = crops.column("jpeg")
    diffs: list[float] = []
    keep: list[bool] = []
    last = None
    for i in range(len(frames)):
        thumb = thumbnail(decode_jpeg(jpegs[i].as_py()), thumb_size)
        if last is None:
            d, k = float("nan"), True
        else:
            d = float(np.mean(np.abs(thumb - last)))
            k = d >= threshold
        if k:
            last = thumb
        diffs.append(d)
        keep.append(k)
    kept = [i for i, k in enumerate(keep) if k]
    if max_per_video and len(kept) > max_per_video:
        pick = np.unique(np.round(np.linspace(0, len(kept) - 1, max_per_video)).astype(int))
        chosen = {kept[j] for j in pick}
        keep = [i in chosen for i in range(len(keep))]
    return pa.table(
        {"frame": frames, "timestamp": stamps, "diff": diffs, "keep": keep},
        schema=KEYFRAME_SCHEMA,
    )
