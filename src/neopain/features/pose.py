"""Head pose as features: per-video statistics of yaw, pitch and roll, and the ``pose``
column the actions tables carry beside ``features`` (docs/actions.md, "Head pose").

The pose itself is the Procrustes fit's rotation of the face mesh
(:mod:`neopain.features.actions`); regressing it out of a fit is learning's job
(:mod:`neopain.learn.posecontrol`).
"""

from __future__ import annotations

import numpy as np

#: per-video statistics of each angle (the pose-only table; pose of video rows)
POSE_STATS = ("mean", "std", "p10", "p90")
ANGLES = ("yaw", "pitch", "roll")


def pose_names() -> list[str]:
    return [f"{a}__{s}" for a in ANGLES for s in POSE_STATS]


def pose_statistics(P: np.ndarray) -> np.ndarray:
    """(n_frames, 3) yaw/pitch/roll -> :data:`POSE_STATS` per angle (NaN without frames)."""
    P = np.asarray(P, np.float64).reshape(-1, 3)
    P = P[np.isfinite(P).all(1)]
    if not len(P):
        return np.full(len(ANGLES) * len(POSE_STATS), np.nan)
    out = []
    for j in range(3):
        x = P[:, j]
        out += [x.mean(), x.std(), np.percentile(x, 10), np.percentile(x, 90)]
    return np.asarray(out, np.float64)


def read_pose(table) -> np.ndarray | None:
    """The ``pose`` column of a gathered feature table (n_rows, n_pose), or None."""
    if "pose" not in table.column_names:
        return None
    col = table.column("pose").combine_chunks()
    d = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float64)
