"""Rotation-robust, single-subject face tracking (the ``track`` stage): :func:`track_video`.

The detector backends (:mod:`neopain.faces.detectors.registry`: ``blazeface``, the default,
``mtcnn``, ``insightface``, ``mediapipe``) find roughly upright faces.  The tracker makes
them work on infants lying at any in-plane rotation and follows ONE subject through a
stream of frames (never loading a whole video).  Its parts, one module each:

* :mod:`neopain.faces.geometry` -- the *views* of a frame the detector sees (downscaled and
  rotated by a multiple of 90 degrees; or a square around the face, rotated by its roll)
  and the maps back to frame pixels;
* :mod:`neopain.faces.subject` -- the decision per frame (search, ROI tracking, verify,
  ``jump`` / ``occluded``, face-mesh check) for one subject;
* :mod:`neopain.faces.smoothing` -- zero-lag One-Euro smoothing of each run of ok frames;
* :mod:`neopain.faces.trackparams` -- the settings; :mod:`neopain.faces.tracktable` -- the
  table (:data:`~neopain.faces.tracktable.TRACK_SCHEMA`, columns and reasons) and status.

This module runs them over a source, frame by frame:

1. frames are read ``batch_size`` at a time (with ``full_every``, the full views at the
   current orientation of the chunk's frames go to the detector as one batch -- the GPU
   setting);
2. a scene cut (mean absolute difference of 32x18 grey thumbnails of consecutive frames
   above ``cut_threshold``) ends the track: the face after it is searched afresh, never
   followed across the cut;
3. while no subject is tracked the search runs on every ``search_every``-th frame only;
   when it acquires a face, the skipped frames before it are tracked backwards from it
   (so no frame is lost to the skip);
4. the rows are smoothed, tabled and summarised in a QC record.

Output: :data:`~neopain.faces.tracktable.TRACK_SCHEMA`, one row per decoded frame, and a
QC record.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from neopain.faces.detectors.detection import Detection, Detector
from neopain.faces.detectors.facemesh import FaceMeshRefiner
from neopain.faces.geometry import Views
from neopain.faces.smoothing import smooth_rows
from neopain.faces.subject import SubjectTracker, skipped_row
from neopain.faces.trackparams import DEFAULT_REACQUIRE_AFTER, ORIENTATIONS, TrackParams
from neopain.faces.tracktable import REASONS, qc_status, rows_to_table
from neopain.faces.video import Frame, VideoError, iter_frames

log = logging.getLogger(__name__)

__all__ = ["track_video"]


class _Run:
    """One source's pass: the rows decided so far, in frame order, and the frames that
    ``search_every`` skipped while no subject was tracked (resolved by the next search)."""

    def __init__(self, tracker: SubjectTracker, params: TrackParams,
                 on_row: Callable[[dict], None] | None, progress: Callable[[int], None] | None):
        self.tr, self.p = tracker, params
        self.on_row, self.progress = on_row, progress
        self.rows: list[dict] = []
        self.pending: list[tuple[Frame, Views]] = []  # frames skipped by search_every
        self.n = 0
        self.n_cuts = 0
        self.last_thumb: np.ndarray | None = None
        self.lost: int | None = 0
        self.bad_images: list[str] = []

    def bad_image(self, index: int, exc: VideoError) -> None:
        """An unreadable image of a frame folder: skipped, counted, logged."""
        self.lost = (self.lost or 0) + 1
        self.bad_images.append(f"frame {index}: {exc}")
        log.error("%s (frame %d skipped)", exc, index)

    def emit(self, row: dict) -> None:
        self.rows.append(row)
        self.n += 1
        if self.on_row is not None:
            self.on_row(row)
        if self.progress is not None:
            self.progress(self.n)

    def flush_pending(self, found: dict | None) -> None:
        """Resolve skipped frames: track them backwards from a new acquisition."""
        if not self.pending:
            return
        tr, p = self.tr, self.p
        resolved: list[dict] = []
        if found is not None and found["ok"]:
            ref = found["det"]
            saved = (tr.prev, tr.missed, tr.orientation)
            misses = 0
            for fr, vw in reversed(self.pending):
                if misses >= p.reacquire_after:
                    resolved.append(skipped_row(fr, tr.orientation))
                    continue
                row = tr.track_step(fr, vw, None, ref=ref)
                if row["reason"] == "occluded":  # before the subject was first seen
                    row["reason"] = "no_face" if row["det"] is None else "low_score"
                if row["ok"]:
                    ref, misses = row["det"], 0
                else:
                    misses += 1
                resolved.append(row)
            tr.prev, tr.missed, tr.orientation = saved
            resolved.reverse()
        else:
            resolved = [skipped_row(fr, tr.orientation) for fr, _ in self.pending]
        for r in resolved:
            self.emit(r)
        self.pending.clear()

    def scene_cuts(self, views: list[Views]) -> list[bool]:
        """Whether a scene cut precedes each view's frame (thumbnail difference)."""
        cuts = []
        for vw in views:
            th = vw.thumb() if self.p.cut_threshold > 0 else None
            cuts.append(th is not None and self.last_thumb is not None
                        and float(np.mean(np.abs(th - self.last_thumb))) > self.p.cut_threshold)
            self.last_thumb = th
        return cuts

    def prefetch_full(self, chunk: list[Frame], views: list[Views]) -> dict[int, list[Detection]]:
        """``full_every``: the full views of the chunk's due frames, detected as one batch."""
        tr, p = self.tr, self.p
        if not (p.full_every and tr.active):
            return {}
        idx = [i for i, f in enumerate(chunk) if f.index % p.full_every == 0]
        if not idx:
            return {}
        tr.calls["full"] += len(idx)
        got = tr.detect_views([views[i].full(tr.orientation) for i in idx])
        return dict(zip(idx, got))

    def chunk(self, chunk: list[Frame]) -> None:
        """Decide the frames of one chunk (``batch_size`` frames), in order."""
        views = [Views(f.image, self.p.max_side) for f in chunk]
        cuts = self.scene_cuts(views)
        prefetched = self.prefetch_full(chunk, views)
        for i, (frame, vw) in enumerate(zip(chunk, views)):
            if cuts[i]:
                self.cut()
                prefetched.pop(i, None)
            self.frame(frame, vw, prefetched.get(i))

    def cut(self) -> None:
        """A scene cut: the subject cannot be followed across it."""
        self.n_cuts += 1
        self.flush_pending(None)
        self.tr.prev, self.tr.missed, self.tr.since_search = None, 0, 0
        if self.rows:
            self.rows[-1]["cut_after"] = True

    def frame(self, frame: Frame, vw: Views, full_dets: list[Detection] | None) -> None:
        """Track, search or skip one frame."""
        tr = self.tr
        if tr.active:
            self.emit(tr.track_step(frame, vw, full_dets))
            tr.since_search = 0
            return
        if tr.since_search % self.p.search_every != 0:
            tr.since_search += 1
            self.pending.append((frame, vw))
            return
        tr.since_search += 1
        row = tr.search_step(frame, vw)
        self.flush_pending(row)
        self.emit(row)
        if row["ok"]:
            tr.since_search = 0

    def finish(self, search_last: bool) -> None:
        """The last skipped frames: search the last one (``search_last``), resolve the rest."""
        if self.pending and search_last:
            frame, vw = self.pending.pop()
            row = self.tr.search_step(frame, vw)
            self.flush_pending(row)
            self.emit(row)
        self.flush_pending(None)


def _chunks(source: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """The frames of ``source`` in lists of ``size`` (the last one shorter)."""
    it = iter(source)
    while True:
        chunk: list[Frame] = []
        for _ in range(size):
            try:
                chunk.append(next(it))
            except StopIteration:
                break
        if not chunk:
            return
        yield chunk


def track_video(
    path: str | os.PathLike,
    detector: Detector,
    min_score: float | None = None,
    max_jump: float = 0.5,
    fps_for_images: float = 30.0,
    max_frames: int | None = None,
    reacquire_after: int = DEFAULT_REACQUIRE_AFTER,
    progress: Callable[[int], None] | None = None,
    *,
    params: TrackParams | None = None,
    refiner: FaceMeshRefiner | None = None,
    on_error: str = "fail",
    frames: Iterable[Frame] | None = None,
    on_row: Callable[[dict], None] | None = None,
    **settings: Any,
) -> tuple[pa.Table, dict[str, Any]]:
    """Detect and track one subject's face through a source (streamed).

    Settings: either ``params`` (a :class:`~neopain.faces.trackparams.TrackParams`) or the
    keyword arguments (``min_score``, ``max_jump``, ``reacquire_after`` and any other
    ``TrackParams`` field).  ``refiner`` (e.g.
    :class:`~neopain.faces.detectors.facemesh.FaceMeshRefiner`) refines the landmarks of
    every accepted face.  ``frames`` replaces decoding ``path`` (any iterable of
    :class:`Frame`; tests use rotated copies).  ``on_row`` is called with each row (a
    dict: ``frame``, ``timestamp``, ``ok``, ``reason``, ``det`` -- unsmoothed --, ...) as
    soon as it is decided, in frame order, at most ``search_every`` frames late; a scene
    cut before the next frame sets ``cut_after`` on it later (:mod:`neopain.deploy.stream`
    scores while tracking).

    ``on_error``: what a :class:`VideoError` while decoding does -- ``"fail"``
    re-raises it; ``"record"`` returns the rows of the frames decoded before it
    (a frame folder's unreadable images are skipped, the others tracked) and
    records the problem in ``error`` (the message) and ``frames_lost``.

    Returns ``(table, qc)``: ``table`` follows
    :data:`~neopain.faces.tracktable.TRACK_SCHEMA`; ``qc`` has ``n_frames``, ``n_ok``,
    ``success_rate``, ``status``, ``frames_lost`` (frames of the source that could not
    be read: truncated tail, unreadable images; ``None`` when a broken container does
    not say how many), ``reasons``, ``orientations`` (ok frames per orientation),
    ``detector_calls``, ``scene_cuts``, ``error``, ``params`` and ``detector``
    (``detector.info()``); no timings (the elapsed time is logged).
    :func:`~neopain.faces.tracktable.qc_status` gives the status.
    """
    if on_error not in ("fail", "record"):
        raise ValueError(f"on_error must be 'fail' or 'record', got {on_error!r}")
    if params is None:
        params = TrackParams(min_score=min_score, max_jump=max_jump,
                             reacquire_after=reacquire_after, **settings)
    elif settings:
        raise TypeError(f"give either params or settings, not both: {sorted(settings)}")
    p = params.for_detector(detector)
    run = _Run(SubjectTracker(detector, p, refiner), p, on_row, progress)
    t0 = time.perf_counter()
    error: str | None = None
    source = frames if frames is not None else iter_frames(
        path, fps_for_images=fps_for_images, max_frames=max_frames,
        on_bad_image=run.bad_image if on_error == "record" else None)
    try:
        for chunk in _chunks(source, p.batch_size):
            run.chunk(chunk)
    except VideoError as exc:
        if on_error == "fail":
            raise
        error = str(exc)
        run.lost = None if exc.frames_lost is None else (run.lost or 0) + exc.frames_lost
        log.error("%s", error)
    run.finish(search_last=error is None)
    if run.bad_images:
        error = "; ".join(filter(None, [error, f"{len(run.bad_images)} unreadable image(s) "
                                        f"skipped, first {run.bad_images[0]}"]))
    if p.smooth:
        smooth_rows(run.rows, p)
    table = rows_to_table(run.rows)
    qc = _qc_record(run, p, error, detector, refiner, fps_for_images, max_frames)
    seconds = time.perf_counter() - t0
    log.info("%s: %d/%d frames tracked (%s) in %.1f s (%.1f frames/s)", path, qc["n_ok"],
             run.n, qc["status"], seconds, run.n / seconds if seconds > 0 else float("nan"))
    return table, qc


def _qc_record(run: _Run, p: TrackParams, error: str | None, detector: Detector,
               refiner: FaceMeshRefiner | None, fps_for_images: float,
               max_frames: int | None) -> dict[str, Any]:
    """The QC record of a finished run (see :func:`track_video`)."""
    reasons = dict.fromkeys(REASONS, 0)
    orient = {str(o): 0 for o in ORIENTATIONS}
    for r in run.rows:
        reasons[r["reason"]] += 1
        if r["ok"]:
            orient[str(r["orientation"])] += 1
    n, n_ok = run.n, reasons["ok"]
    info = detector.info()
    if refiner is not None:
        info = {**info, "refiner": refiner.info()}
    return {
        "n_frames": n,
        "n_ok": n_ok,
        "success_rate": n_ok / n if n else 0.0,
        "status": qc_status(n, n_ok, error),
        "error": error,
        "frames_lost": run.lost,
        "reasons": reasons,
        "orientations": orient,
        "detector_calls": dict(run.tr.calls),
        "scene_cuts": run.n_cuts,
        "params": {**{k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in p.__dict__.items()},
                   "fps_for_images": fps_for_images, "max_frames": max_frames},
        "detector": info,
    }
