"""Deep feature extraction from keyframe crops: one forward pass per batch
produces every requested layer, written as Parquet.

Per-video files hold ``video_id, frame, timestamp`` and one fixed-size
float32 list column ``f_<layer>`` per layer.  :func:`gather_layer` then builds
the per backbone x layer table ``video_id, subject_id, label, y, frame,
timestamp, features`` with one row group per video (so one video's rows can
be read without reading the others).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .backbones import FeatureNet
from .crop import decode_jpeg
from .tables import feature_matrix  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def feature_dims(net: FeatureNet, size: int) -> dict[str, int]:
    with torch.no_grad():
        out = net(torch.zeros(1, 3, size, size))
    return {k: int(v.shape[1]) for k, v in out.items()}


def _batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for img in images:
        batch.append(img)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_video(
    net: FeatureNet, video_id: str, crops: pa.Table, keyframes: pa.Table,
    batch_size: int = 32, device: torch.device | None = None,
) -> pa.Table:
    """Features of the keyframes of one video (all layers of ``net``)."""
    device = device or torch.device("cpu")
    net = net.to(device).eval()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    kept = keyframes.filter(keyframes.column("keep"))
    keep_frames = set(kept.column("frame").to_pylist())
    frames = crops.column("frame").to_pylist()
    rows = [i for i, f in enumerate(frames) if f in keep_frames]
    size = net.spec.input_size
    dims = feature_dims(net.cpu(), size)
    net = net.to(device)
    out: dict[str, list[np.ndarray]] = {name: [] for name in net.layers}

    def images() -> Iterator[np.ndarray]:
        jpeg = crops.column("jpeg")
        for i in rows:
            img = decode_jpeg(jpeg[i].as_py())
            if img.shape[0] != size or img.shape[1] != size:
                import cv2
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            yield img

    with torch.inference_mode():
        for batch in _batches(images(), batch_size):
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
            x = x.to(device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    feats = net(x)
            else:
                feats = net(x)
            for name, t in feats.items():
                out[name].append(t.float().cpu().numpy())
    columns = {
        "video_id": pa.array([video_id] * len(rows), pa.string()),
        "frame": pa.array([frames[i] for i in rows], pa.int32()),
        "timestamp": pa.array(
            [crops.column("timestamp")[i].as_py() for i in rows], pa.float64()),
    }
    for name in net.layers:
        d = dims[name]
        arr = (np.concatenate(out[name]) if out[name] else np.zeros((0, d), np.float32))
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        columns[f"f_{name}"] = pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), d)
    return pa.table(columns)


def gather_layer(
    per_video: dict[str, str | Path], layer: str, samples: pd.DataFrame,
    positive_label: str, writer_path: str | Path, metadata: dict[bytes, bytes],
) -> int:
    """Write the gathered table of one layer, one row group per video.

    ``per_video`` maps video_id to its per-video Parquet; only the
    ``f_<layer>`` column is read from each.  Returns the number of rows.
    """
    col = f"f_{layer}"
    writer = None
    n = 0
    schema = None
    try:
        for vid in sorted(per_video):
            t = pq.read_table(per_video[vid], columns=["video_id", "frame", "timestamp", col])
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
                "features": t.column(col).cast(pa.list_(pa.float32(), d)),
            })
            if schema is None:
                schema = table.schema.with_metadata(
                    {**metadata, b"neopain.feature_dim": str(d).encode()})
                writer = pq.ParquetWriter(str(writer_path), schema, compression="zstd")
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


def read_features(path: str | Path, video_ids: list[str] | None = None) -> pd.DataFrame:
    """Read a gathered table (optionally only some videos) into pandas + matrix."""
    filters = [("video_id", "in", video_ids)] if video_ids else None
    return pq.read_table(path, filters=filters).to_pandas()
