"""Deep feature extraction from keyframe crops: one forward pass per batch
produces every requested layer, written as Parquet.

Per-video files hold ``video_id, frame, timestamp`` and one fixed-size list column
``f_<layer>`` per layer (float32, or float16 with ``dtype="float16"`` for conv5-sized
layers).  :func:`gather_layer` then builds the per backbone x layer table ``video_id,
subject_id, label, y, frame, timestamp, features`` with one row group per video (so one
video's rows can be read without reading the others: row-group statistics on
``video_id`` let pyarrow and duckdb skip the others).

Streaming: the JPEG crops of batch i+1.. are decoded and resized on a thread pool
(OpenCV releases the GIL) while the network runs on batch i.  On CUDA the batch is
copied from pinned memory without blocking, the network runs channels_last under
autocast (bf16 where supported, else fp16; ``precision`` chooses); on CPU it runs fp32.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice, repeat
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from neopain.features.backbones import FeatureNet
from neopain.features.keyframe_crops import keyframe_rows
from neopain.faces.crop import decode_jpeg
from neopain.features.tables import fixed_size_list

log = logging.getLogger(__name__)
T, R = TypeVar("T"), TypeVar("R")

DTYPES = {"float32": (np.float32, pa.float32()), "float16": (np.float16, pa.float16())}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (None: fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def precision_name(device: torch.device, precision: str = "auto") -> str:
    dt = autocast_dtype(device, precision)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dt]


def feature_dims(net: FeatureNet, size: int | None = None) -> dict[str, int]:
    size = size or net.spec.input_size
    p = next(net.parameters())
    with torch.no_grad():
        out = net(torch.zeros(1, 3, size, size, device=p.device))
    return {k: int(v.shape[1]) for k, v in out.items()}


def reduce_factor(src: int, size: int) -> int:
    """Largest libjpeg reduction (1, 2, 4, 8) that still decodes a ``src`` px crop at
    >= ``size`` px: a 224 px crop for a 64 px network decodes at 112 px, then
    INTER_AREA to 64.  Small-input networks are otherwise decode-bound on a CPU."""
    for f in (8, 4, 2):
        if -(-src // f) >= size:
            return f
    return 1


def decode_batch(jpegs: Sequence[bytes], size: int, reduce: int = 1,
                 grey: bool = False) -> np.ndarray:
    """JPEG crops -> N x size x size x 3 uint8 RGB (INTER_AREA when shrinking).  With
    ``grey`` the luma plane is decoded and copied into all three channels, which a
    grey-input network (BT.601 weights summing to 1) turns back into the same grey."""
    out = np.empty((len(jpegs), size, size, 3), np.uint8)
    for i, b in enumerate(jpegs):
        img = decode_jpeg(b, reduce, grey)
        if img.shape[0] != size or img.shape[1] != size:
            interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
        out[i] = img[..., None] if grey else img
    return out


def prefetch_batches(jpegs: Sequence[bytes], size: int, batch_size: int,
                     workers: int = 2, depth: int | None = None,
                     fast_decode: bool = True, grey: bool = False,
                     overlap: bool = True) -> Iterator[np.ndarray]:
    """Decoded batches in order.

    With ``overlap`` (a network on a GPU) ``depth`` batches are decoded ahead on
    ``workers`` threads while the caller runs the network.  Without it (a network on
    the CPU, sharing the cores with the decoder) each batch is decoded when it is asked
    for, split across the ``workers`` threads: a decode thread running beside torch's
    threads pre-empts one of them and the others wait for it at every barrier
    (fer, 2 cores: pipeline/bare 0.81 decoding ahead, 0.85 between batches;
    bench/bench_extract.py).
    ``fast_decode`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the network's
    input is that much smaller than the crops (see :func:`reduce_factor`); the size of
    the first crop decides it for the video.  ``grey`` (for networks whose input is
    grey, e.g. fer) decodes only the luma plane (see :func:`decode_batch`)."""
    starts = range(0, len(jpegs), batch_size)
    reduce = 1
    if len(jpegs) and fast_decode:
        reduce = reduce_factor(min(decode_jpeg(jpegs[0], grey=True).shape[:2]), size)
    if not overlap and workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            for s in starts:
                part = jpegs[s:s + batch_size]
                step = -(-len(part) // workers)
                chunks = list(pool.map(decode_batch,
                                       [part[i:i + step] for i in range(0, len(part), step)],
                                       repeat(size), repeat(reduce), repeat(grey)))
                yield chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return
    yield from map_ahead(lambda s: decode_batch(jpegs[s:s + batch_size], size, reduce, grey),
                         starts, workers if overlap else 0, depth)


def map_ahead(fn: Callable[[T], R], items: Iterable[T], workers: int,
              depth: int | None = None) -> Iterator[R]:
    """``fn(item)`` for each item, in order, up to ``depth`` (default ``workers + 1``)
    computed ahead on ``workers`` threads while the caller consumes (inline when
    ``workers <= 0``)."""
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    depth = depth or workers + 1
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque(pool.submit(fn, item) for item in islice(it, depth))
        while pending:
            out = pending.popleft().result()
            for item in islice(it, 1):
                pending.append(pool.submit(fn, item))
            yield out


def to_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [0, 1] on ``device`` (pinned,
    non-blocking copy and channels_last on CUDA)."""
    x = torch.from_numpy(batch)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Runner:
    """Moves ``net`` to ``device`` once (channels_last on CUDA) and runs uint8 NHWC
    batches through it under the chosen precision."""

    def __init__(self, net: FeatureNet, device: torch.device | None = None,
                 precision: str = "auto"):
        self.device = device or torch.device("cpu")
        self.amp = autocast_dtype(self.device, precision)
        net = net.eval().to(self.device)
        if self.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        self.net = net

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
        x = to_input(batch, self.device)
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                return self.net(x)
        return self.net(x)


def extract_video(
    net: FeatureNet, video_id: str, crops: pa.Table, keyframes: pa.Table,
    batch_size: int = 32, device: torch.device | None = None, precision: str = "auto",
    dtype: str = "float32", workers: int = 2, fast_decode: bool = True,
    overlap: bool | None = None,
) -> pa.Table:
    """Features of the keyframes of one video (all layers of ``net``).  ``overlap``
    (:func:`prefetch_batches`; default: on a GPU only) decodes ahead while the network
    runs; on the CPU each batch is decoded between forward passes on all ``workers``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    np_dtype = DTYPES[dtype][0]
    runner = Runner(net, device, precision)
    frames = crops.column("frame").to_pylist()
    rows = keyframe_rows(crops, keyframes)
    size = net.spec.input_size
    jpeg_col = crops.column("jpeg")
    jpegs = [jpeg_col[i].as_py() for i in rows]
    out: dict[str, list[np.ndarray]] = {name: [] for name in net.layers}

    def collect(done):
        host, event = done
        if event is not None:
            event.synchronize()
        for name, t in host.items():
            out[name].append(t.numpy().astype(np_dtype, copy=False))

    pending = None
    started, n_done, next_log = time.perf_counter(), 0, 0.0
    grey = fast_decode and net.spec.colour == "GRAY"
    if overlap is None:
        overlap = runner.device.type != "cpu"
    for batch in prefetch_batches(jpegs, size, batch_size, workers,
                                   fast_decode=fast_decode, grey=grey, overlap=bool(overlap)):
        feats = runner(batch)
        n_done += len(batch)
        elapsed = time.perf_counter() - started
        if elapsed >= next_log or n_done == len(rows):  # progress for the job's log
            log.info("%s: %d/%d keyframes in %.1f s (%.1f images/s)", video_id, n_done,
                     len(rows), elapsed, n_done / max(elapsed, 1e-9))
            next_log = elapsed + 10.0
        if runner.device.type == "cuda":
            # copy back without blocking; the next batch is launched before we wait on it
            host = {}
            for name, t in feats.items():
                t = t.to(torch.float16 if dtype == "float16" else torch.float32)
                host[name] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                host[name].copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            done = (host, event)
        else:
            done = ({k: v.to(torch.float32) for k, v in feats.items()}, None)
        if pending is not None:
            collect(pending)
        pending = done
    if pending is not None:
        collect(pending)
    dims = ({k: v[0].shape[1] for k, v in out.items()} if rows
            else feature_dims(runner.net, size))
    ts = crops.column("timestamp")
    columns = {
        "video_id": pa.array([video_id] * len(rows), pa.string()),
        "frame": pa.array([frames[i] for i in rows], pa.int32()),
        "timestamp": pa.array([ts[i].as_py() for i in rows], pa.float64()),
    }
    for name in net.layers:
        d = dims[name]
        arr = np.concatenate(out[name]) if out[name] else np.zeros((0, d), np_dtype)
        arr = np.ascontiguousarray(arr, dtype=np_dtype)
        columns[f"f_{name}"] = fixed_size_list(arr)
    return pa.table(columns)


def read_features(path: str | Path, video_ids: list[str] | None = None) -> pd.DataFrame:
    """Read a gathered table (optionally only some videos) into pandas + matrix."""
    filters = [("video_id", "in", video_ids)] if video_ids else None
    return pq.read_table(path, filters=filters).to_pandas()
