"""Writing and reading the gathered feature tables (no torch import: the gather, select,
classify and nested rules use these without a CNN)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import pandas as pd


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


def gather_layer(
    per_video: dict[str, str | Path], layer: str, samples: pd.DataFrame,
    positive_label: str, writer_path: str | Path, metadata: dict[bytes, bytes],
) -> int:
    """Write the gathered table of one layer, one row group per video.

    ``per_video`` maps video_id to its per-video Parquet; only the
    ``f_<layer>`` column is read from each (its float32 or float16 values are kept), and
    ``pose_<layer>`` as ``pose`` where present (the actions tables' head pose).
    Returns the number of rows.
    """
    import pyarrow.parquet as pq

    col, pcol = f"f_{layer}", f"pose_{layer}"
    writer = None
    n = 0
    schema = None
    try:
        for vid in sorted(per_video):
            names = pq.read_schema(per_video[vid]).names
            extra = [pcol] if pcol in names else []   # head pose (actions tables)
            t = pq.read_table(per_video[vid], columns=["video_id", "frame", "timestamp", col,
                                                       *extra])
            row = samples.loc[vid]
            m = t.num_rows
            d = t.schema.field(col).type.list_size
            table = pa.table({
                "video_id": t.column("video_id"),
                "subject_id": pa.array([row["subject_id"]] * m, pa.string()),
                "label": pa.array([row["label"]] * m, pa.string()),
                "y": pa.array([int(row["label"] == positive_label)] * m, pa.int8()),
                "frame": t.column("frame"),
                "timestamp": t.column("timestamp"),
                "features": t.column(col).cast(
                    pa.list_(t.schema.field(col).type.value_type, d)),
                **({"pose": t.column(pcol)} if extra else {}),
            })
            if schema is None:
                schema = table.schema.with_metadata(
                    {**metadata, b"neopain.feature_dim": str(d).encode()})
                writer = pq.ParquetWriter(
                    str(writer_path), schema, compression="zstd",
                    use_dictionary=["video_id", "subject_id", "label"],
                    write_statistics=["video_id", "subject_id", "label", "y", "frame",
                                      "timestamp"])
            elif table.schema.field("features").type != schema.field("features").type:
                raise ValueError(f"{per_video[vid]}: feature size differs from other videos")
            if m:  # one row group per video that has keyframes
                writer.write_table(table.replace_schema_metadata(schema.metadata),
                                   row_group_size=m)
            n += m
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"no per-video feature files for layer {layer!r}")
    return n
