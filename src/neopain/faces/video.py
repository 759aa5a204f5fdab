"""Streaming frame access for every kind of input the pipeline accepts.

A *source* is one of

* a video file (anything FFmpeg/PyAV can demux: .mp4, .mov, .avi, .mkv, ...);
* a directory of image files (a frame folder such as a CK+ sequence);
* a single image file (one frame).

:func:`iter_frames` yields :class:`Frame` tuples one at a time, so a whole
video is never held in memory.  Images are always HxWx3 ``uint8`` RGB (grey
and RGBA images are converted).

Timestamps
    Video frames carry their presentation time in seconds, exactly as the
    container gives it (``frame.time``; a stream whose first frame is at
    0.852 s starts at 0.852 s -- nothing is rebased).  When a frame has no
    pts the timestamp falls back to ``index / fps`` with the stream's average
    rate (or ``fps_for_images`` when the stream has none).  Image frames get
    ``index / fps_for_images``.

Frame counts
    Container frame counts (``CAP_PROP_FRAME_COUNT``, ``stream.frames``) are
    never used as the number of frames: frames are counted as they decode.
    (``no_face.mp4`` in the test data declares 98 frames; three of its packets
    are flagged "discard" by its edit list and 95 frames decode.)

Truncated files
    A truncated MP4 whose index (``moov``) sits at the end of the file fails
    to open; one whose index sits at the front ("faststart") either makes the
    decoder raise mid-stream (the cut falls inside a packet) or makes the
    demuxer stop *silently* (the cut falls on a packet boundary -- PyAV then
    just ends the stream early).  To catch the silent case, after the last
    packet :func:`iter_frames` compares

    * the number of packets demuxed (including ones flagged discard) with the
      number of samples the container's index declares (``stream.frames``),
      when the container declares one: any shortfall is truncation;
    * otherwise, the presentation time reached with the declared stream (or
      container) duration: a shortfall of more than
      ``max(2 frame durations, 2 % of the duration)`` is truncation.

    Both raise :class:`VideoError` naming the file and the number of frames
    decoded before the problem.  Note that this check fires only after the
    frames that did decode have been yielded.  ``VideoError.frames_lost`` is the
    number of frames the container declared but that never decoded (from the
    packet count, else the duration; ``None`` when the container declares neither).

Unreadable images in a frame folder
    By default the first unreadable image raises :class:`VideoError`.  With
    ``on_bad_image`` the image is reported to that callback and skipped; the other
    frames keep their index (the position in the folder), so a re-read with the same
    callback yields the same frames.
"""

from __future__ import annotations

import logging
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from neopain.core.provenance import source_sha256 as provenance_source_sha256

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

__all__ = [
    "IMAGE_EXTENSIONS",
    "Frame",
    "VideoError",
    "iter_frames",
    "list_image_files",
    "natural_key",
    "source_sha256",
]


class VideoError(Exception):
    """A source cannot be read.  The message always starts with the path."""

    def __init__(self, path: str | os.PathLike, problem: str,
                 frames_lost: int | None = None):
        self.path = str(path)
        self.problem = problem
        self.frames_lost = frames_lost  #: frames declared but not decoded (None: unknown)
        super().__init__(f"{self.path}: {problem}")


class Frame(NamedTuple):
    index: int  #: 0-based position in decode (= presentation) order
    timestamp: float  #: seconds
    image: np.ndarray  #: HxWx3 uint8 RGB


def natural_key(name: str) -> list:
    """Sort key putting ``img2.png`` before ``img10.png``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_image_files(directory: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``directory`` (not recursive), natural-sorted.

    Hidden files (``.name``) are ignored.
    """
    directory = Path(directory)
    files = [
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _read_image(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grey / RGBA / 16-bit converted)."""
    raw = np.fromfile(str(path), dtype=np.uint8)  # tolerant of non-ASCII paths
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if img is None:
        raise VideoError(path, "not a readable image file")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        else:
            raise VideoError(path, f"unsupported image pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _iter_images(files: list[Path], fps: float, max_frames: int | None,
                 on_bad_image: Callable[[int, VideoError], None] | None = None
                 ) -> Iterator[Frame]:
    for index, file in enumerate(files):
        if max_frames is not None and index >= max_frames:
            return
        try:
            image = _read_image(file)
        except VideoError as exc:
            if on_bad_image is None:
                raise
            on_bad_image(index, exc)
            continue
        yield Frame(index, index / fps, image)


def _iter_video(path: Path, fps_for_images: float, max_frames: int | None) -> Iterator[Frame]:
    import av  # local import: image-only users need not load FFmpeg

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise VideoError(path, f"not a readable video file ({exc})") from exc

    with container:
        if not container.streams.video:
            raise VideoError(path, "contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else float(fps_for_images)
        declared_frames = int(stream.frames or 0)

        index = 0
        n_packets = 0
        last_time: float | None = None
        try:
            for packet in container.demux(stream):
                if packet.size:
                    n_packets += 1
                for frame in packet.decode():
                    if max_frames is not None and index >= max_frames:
                        return
                    t = frame.time
                    timestamp = float(t) if t is not None else index / fps
                    last_time = timestamp
                    yield Frame(index, timestamp, frame.to_ndarray(format="rgb24"))
                    index += 1
                    if max_frames is not None and index >= max_frames:
                        return  # all that was asked for: what follows is not read
        except av.FFmpegError as exc:
            raise VideoError(
                path, f"decode error after {index} frame(s) (at frame index {index}): {exc}",
                frames_lost=_frames_lost(stream, container, fps, index, last_time),
            ) from exc

        if index == 0:
            raise VideoError(path, "no frame could be decoded")

        # --- silent truncation (see module docstring) ---
        if declared_frames > 0:
            if n_packets < declared_frames:
                raise VideoError(
                    path,
                    f"truncated: the stream ended after {n_packets} of {declared_frames} "
                    f"packets declared by the container ({index} frame(s) decoded, "
                    f"stopped at frame index {index})",
                    frames_lost=max(0, declared_frames - index),
                )
        else:
            declared_end = None
            if stream.duration is not None and stream.time_base is not None:
                start = stream.start_time or 0
                declared_end = float((start + stream.duration) * Fraction(stream.time_base))
            elif container.duration is not None:
                declared_end = (container.duration + (container.start_time or 0)) / 1e6
            if declared_end is not None and last_time is not None:
                reached = last_time + 1.0 / fps
                tolerance = max(2.0 / fps, 0.02 * declared_end)
                if reached < declared_end - tolerance:
                    raise VideoError(
                        path,
                        f"truncated: decoding stopped at {reached:.3f} s of a declared "
                        f"{declared_end:.3f} s ({index} frame(s) decoded, stopped at "
                        f"frame index {index})",
                        frames_lost=max(1, int(round((declared_end - reached) * fps))),
                    )
        log.debug("%s: decoded %d frames (%d packets)", path, index, n_packets)


def _frames_lost(stream, container, fps: float, decoded: int,
                 last_time: float | None) -> int | None:
    """Frames a broken stream declared but did not decode (None: it declares nothing)."""
    if stream.frames:
        return max(0, int(stream.frames) - decoded)
    end = None
    if stream.duration is not None and stream.time_base is not None:
        end = float(((stream.start_time or 0) + stream.duration) * Fraction(stream.time_base))
    elif container.duration is not None:
        end = (container.duration + (container.start_time or 0)) / 1e6
    if end is None:
        return None
    reached = (last_time + 1.0 / fps) if last_time is not None else 0.0
    return max(0, int(round((end - reached) * fps)))


def iter_frames(
    path: str | os.PathLike,
    fps_for_images: float = 30.0,
    max_frames: int | None = None,
    on_bad_image: Callable[[int, VideoError], None] | None = None,
) -> Iterator[Frame]:
    """Stream the frames of a video file, a frame folder or a single image.

    ``max_frames`` stops after that many frames, reading nothing beyond them (the
    truncation check is then skipped).  ``on_bad_image(index, error)`` skips
    unreadable images of a frame folder instead of raising.  A missing path or an empty directory
    raises :class:`VideoError` immediately; unreadable / corrupt / truncated
    data raises it while iterating.
    """
    path = Path(path)
    if fps_for_images <= 0:
        raise ValueError(f"fps_for_images must be > 0, got {fps_for_images}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if not path.exists():
        raise VideoError(path, "does not exist")
    if path.is_dir():
        files = list_image_files(path)
        if not files:
            raise VideoError(
                path,
                "directory contains no image files "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))})",
            )
        return _iter_images(files, float(fps_for_images), max_frames, on_bad_image)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _iter_images([path], float(fps_for_images), max_frames)
    return _iter_video(path, float(fps_for_images), max_frames)


def source_sha256(path: str | os.PathLike) -> str:
    """sha256 of a source (a file's bytes; a folder's files, names and bytes):
    :func:`neopain.core.provenance.source_sha256`, after checking that it exists."""
    path = Path(path)
    if not path.exists():
        raise VideoError(path, "does not exist")
    return provenance_source_sha256(path)
