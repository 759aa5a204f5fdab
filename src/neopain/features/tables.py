"""Reading the gathered feature tables (no torch import needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def feature_matrix(table: pa.Table, baseline: str = "none") -> np.ndarray:
    """The ``features`` column as an (n_rows, dim) float32 matrix, with each subject's
    ``baseline`` removed (:mod:`neopain.features.baseline`; label-free, transductive)."""
    col = table.column("features").combine_chunks()
    d = col.type.list_size
    X = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32)
    if baseline != "none":
        from neopain.features.baseline import subject_baseline

        X = subject_baseline(X, table.column("subject_id").to_numpy(zero_copy_only=False),
                             baseline)
    return X


def fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """An (n_rows, dim) float32/float16 matrix as a FixedSizeList column, without a copy.

    ``pa.array(values, type=...)`` converts element by element (~180 ms for 1024 x 2048
    float32, more than the fer network's forward pass over those rows); from a
    contiguous array of the right dtype Arrow wraps the buffer instead."""
    m = np.ascontiguousarray(matrix)
    if m.ndim != 2 or m.dtype not in (np.float32, np.float16):
        raise ValueError(f"need an (n, dim) float32/float16 matrix, not {m.dtype} {m.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def read_features(path, ids=("video_id", "subject_id", "y"), pose: bool = False):
    """(feature matrix, DataFrame of the ``ids`` columns) of a gathered feature table;
    with ``pose``, a third item: its head pose (:func:`neopain.features.pose.read_pose`;
    None for a table without one)."""
    import pyarrow.parquet as pq

    if not pose:
        t = pq.read_table(path, columns=[*ids, "features"])
        return feature_matrix(t), t.select(list(ids)).to_pandas()
    from neopain.features.pose import read_pose
    t = pq.read_table(path)
    return feature_matrix(t), t.select(list(ids)).to_pandas(), read_pose(t)
