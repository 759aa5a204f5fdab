"""Track, crop and keyframes of one video in one decode pass.

The tracker streams the source (:func:`neopain.faces.track.track_video` with ``frames=``);
the frames it reads are kept in memory up to ``max_bytes`` so the crop stage aligns
them without decoding the source a second time.  A longer source (more decoded pixels
than ``max_bytes``) is streamed again by :func:`neopain.faces.crop.crop_video`, as before.
Both paths give identical tables (the crop matches frames to the track by index and
timestamp either way).

What ``track_video`` does with a frame folder's unreadable images when it decodes
the source itself (skip them, count them in ``frames_lost`` and name the first in
``error``, under ``on_error: record``) is done here for the frames it is given, so the
QC record is the same as a separate track job's.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from neopain.faces.video import Frame, VideoError, iter_frames

log = logging.getLogger(__name__)

#: decoded frames kept for the crop stage (bytes of RGB pixels); beyond: decode again
DEFAULT_MAX_BYTES = 1 << 30


class FrameTee:
    """The frames of one source, decoded once: iterate it (the tracker does) and the
    frames stay in :attr:`kept` for the crop stage, unless they exceed ``max_bytes``
    (then :attr:`kept` is ``None``: the crop stage decodes the source again)."""

    def __init__(self, path: str, fps_for_images: float, on_error: str,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.path, self.fps, self.on_error, self.max_bytes = path, fps_for_images, on_error, max_bytes
        self.bad_images: list[str] = []
        self._kept: list[Frame] | None = []
        self._bytes = 0

    def _bad(self, index: int, exc: VideoError) -> None:
        self.bad_images.append(f"frame {index}: {exc}")
        log.error("%s (frame %d skipped)", exc, index)

    def __iter__(self) -> Iterator[Frame]:
        source = iter_frames(self.path, fps_for_images=self.fps,
                             on_bad_image=self._bad if self.on_error == "record" else None)
        for fr in source:
            if self._kept is not None:
                self._bytes += fr.image.nbytes
                if self._bytes > self.max_bytes:
                    log.info("%s: over %d MB of decoded frames; the crop stage decodes it "
                             "again", self.path, self.max_bytes >> 20)
                    self._kept = None
                else:
                    self._kept.append(fr)
            yield fr

    @property
    def kept(self) -> list[Frame] | None:
        return self._kept


def _record_bad_images(qc: dict[str, Any], bad: list[str]) -> dict[str, Any]:
    """The QC record as ``track_video`` makes it when it skips unreadable images itself."""
    from neopain.faces.tracktable import qc_status

    if not bad:
        return qc
    lost = qc.get("frames_lost")
    error = "; ".join(filter(None, [qc.get("error"), f"{len(bad)} unreadable image(s) "
                                    f"skipped, first {bad[0]}"]))
    return {**qc, "error": error,
            "frames_lost": None if lost is None else lost + len(bad),
            "status": qc_status(qc["n_frames"], qc["n_ok"], error)}


def track_crop_keyframes(path: str, detector, refiner, *, track_params, crop_cfg: dict,
                         keyframes_cfg: dict, fps_for_images: float = 30.0,
                         on_error: str = "record", max_bytes: int = DEFAULT_MAX_BYTES,
                         progress: Callable[[int], None] | None = None):
    """``(track table, qc, crops table, keyframes table)`` of one source."""
    from neopain.faces.crop import crop_video
    from neopain.faces.keyframes import select_keyframes
    from neopain.faces.track import track_video

    tee = FrameTee(path, fps_for_images, on_error, max_bytes)
    table, qc = track_video(path, detector, params=track_params, refiner=refiner,
                            fps_for_images=fps_for_images, on_error=on_error,
                            progress=progress, frames=tee)
    qc = _record_bad_images(qc, tee.bad_images)
    crops = crop_video(path, table, size=crop_cfg["size"],
                       jpeg_quality=crop_cfg["jpeg_quality"],
                       fps_for_images=fps_for_images, frames=tee.kept)
    keyframes = select_keyframes(crops, **keyframes_cfg)
    return table, qc, crops, keyframes
