"""One decode pass for bedside prediction: track and score a stream at the same time.

``neopain predict`` used to decode a video twice: once to track it (the tracker's
One-Euro smoothing runs forwards *and backwards* over each run of tracked frames, so a
frame's final landmarks are known only when its run has ended), then again to align,
JPEG-encode and score the faces.  :func:`track_and_score` decodes once:

* the tracker (:func:`neopain.faces.track.track_video`) hands over each row as soon as it is
  decided (``on_row``); the decoded frames wait in a buffer of at most
  ``lookahead + block + search_every`` frames;
* :class:`LookaheadSmoother` gives each tracked frame the landmarks of the tracker's
  zero-lag smoother: the forward pass exactly (it is causal), the backward pass started
  ``lookahead`` frames later (default 60, 2 s at 30 fps) instead of at the end of the
  run, and exactly at the end of a run.  The backward filter forgets its start by a
  factor of at most ``1 - alpha(min_cutoff) <= 0.76`` per frame at 30 fps (the value
  filter; 0.83 for its speed estimate), so after 60 frames the start weighs < 1e-5 of
  its (sub-pixel) offset: the landmarks equal the track table's to float32 precision;
  each prediction records the largest difference it saw (``stream_landmark_max_dev``);
* aligned crops are JPEG round-tripped (as the study's crops were) on the tracking
  thread and go, ``batch_size`` at a time in frame order (the same batches as before),
  to a scoring thread running the CNN and the model; when the scoring thread falls
  behind (more than ``max_pending`` batches waiting) the tracking thread scores a batch
  itself, so both cores run the CNN whenever tracking is ahead.  Torch, OpenCV, PyAV and
  LiteRT release the GIL in their kernels.

Memory: the frame buffer (720p: 2.7 MB a frame, ~220 MB at the default lookahead) plus
``max_pending + 2`` batches of crops.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from neopain.faces.video import Frame

__all__ = ["LookaheadSmoother", "track_and_score"]


class LookaheadSmoother:
    """The tracker's forward-backward One-Euro smoothing of the five landmarks with a
    bounded lag (see the module docstring).  ``push`` rows in order; ``emit(position,
    row, landmarks)`` is called once per row, in order, with the smoothed (float32
    rounded, as the track table stores them) landmarks of an ok row, else None."""

    def __init__(self, params, emit: Callable[[int, dict, np.ndarray | None], None],
                 lookahead: int = 60, block: int = 15):
        if lookahead < 1 or block < 1:
            raise ValueError("lookahead and block must be >= 1")
        self.smooth = bool(params.smooth)
        self.kw = dict(min_cutoff=params.smooth_min_cutoff, beta=params.smooth_beta)
        self.emit = emit
        self.lookahead, self.block = int(lookahead), int(block)
        self.n = 0
        self._run: list[tuple[int, dict]] = []
        self._x: list[np.ndarray] = []
        self._t: list[float] = []
        self._s: list[float] = []
        self._fwd: list[np.ndarray] = []
        self._dx = None
        self._done = 0          # rows of the kept part of the run already emitted
        self._total = 0         # rows of the run, trimmed ones included
        self.max_lag = 0

    def push(self, row: dict) -> None:
        pos = self.n
        self.n += 1
        if self._run:
            last = self._run[-1][1]
            if (not row["ok"] or row["frame"] != last["frame"] + 1
                    or last.get("cut_after")):
                self._end_run()
        if not row["ok"]:
            self.emit(pos, row, None)
            return
        self._add(pos, row)
        if not self.smooth:
            self._end_run()
        elif len(self._run) - self._done >= self.block + self.lookahead:
            self._emit_block(exact=False)

    def close(self) -> None:
        self._end_run()

    # ------------------------------------------------------------------ internals
    def _add(self, pos: int, row: dict) -> None:
        from neopain.faces.smoothing import one_euro_step as _one_euro_step

        x = np.asarray(row["det"].landmarks, np.float64).reshape(5, 2)
        t, s = float(row["timestamp"]), float(row["det"].size)
        if not self._run:
            fwd, self._dx = x.copy(), np.zeros_like(x)
        else:
            fwd, self._dx = _one_euro_step(x, self._fwd[-1], self._dx, t - self._t[-1], s,
                                           **self.kw)
        self._run.append((pos, row))
        self._total += 1
        self._x.append(x)
        self._t.append(t)
        self._s.append(s)
        self._fwd.append(fwd)

    def _emit_block(self, exact: bool) -> None:
        from neopain.faces.smoothing import one_euro_pass as _one_euro_pass

        lo = self._done
        hi = len(self._run) if exact else lo + self.block
        n = len(self._run)
        if self._total < 3:  # the tracker leaves runs shorter than 3 unsmoothed
            out = self._x[lo:hi]
        else:
            x = np.stack(self._x[lo:n])
            t = np.asarray(self._t[lo:n])
            s = np.asarray(self._s[lo:n])
            bwd = _one_euro_pass(x[::-1], t[::-1], s[::-1], **self.kw)[::-1]
            out = [0.5 * (f + b) for f, b in zip(self._fwd[lo:hi], bwd[: hi - lo])]
        for (pos, row), lm in zip(self._run[lo:hi], out):
            self.max_lag = max(self.max_lag, self.n - 1 - pos)
            self.emit(pos, row, np.asarray(lm, np.float32).astype(np.float64))
        self._done = hi
        if not exact and self._done > 4 * (self.block + self.lookahead):
            # keep the run's arrays short: the forward state lives in _fwd[-1] / _dx
            k = self._done
            self._run, self._x = self._run[k:], self._x[k:]
            self._t, self._s, self._fwd = self._t[k:], self._s[k:], self._fwd[k:]
            self._done = 0

    def _end_run(self) -> None:
        if self._run and self._done < len(self._run):
            self._emit_block(exact=True)
        self._run, self._x, self._t, self._s, self._fwd = [], [], [], [], []
        self._dx, self._done, self._total = None, 0, 0


class _Scorer:
    """Batches of uint8 network inputs -> ``score(batch, positions)``, on a worker thread
    and, when it falls behind, on the caller's thread too."""

    def __init__(self, score: Callable[[np.ndarray, list[int]], None], max_pending: int):
        self._score = score
        self._q: queue.Queue = queue.Queue()
        self.max_pending = max(1, int(max_pending))
        self.error: BaseException | None = None
        self.by_caller = 0
        self._t = threading.Thread(target=self._work, name="neopain-score", daemon=True)
        self._t.start()

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            self._run(item)

    def _run(self, item) -> None:
        if self.error is not None:
            return
        try:
            self._score(*item)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller in close()
            self.error = exc

    def put(self, batch: np.ndarray, positions: list[int]) -> None:
        self._q.put((batch, positions))
        while self._q.qsize() > self.max_pending:  # behind: help instead of waiting
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:  # pragma: no cover - never queued before close()
                self._q.put(None)
                break
            self.by_caller += 1
            self._run(item)

    def close(self) -> None:
        """Score what is left (this thread helping the worker), then stop the worker."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            self.by_caller += 1
            self._run(item)
        self._q.put(None)
        self._t.join()
        if self.error is not None:
            raise self.error


def track_and_score(frames: Iterable[Frame], track: Callable[..., Any],
                    prepare: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    score: Callable[[np.ndarray, list[int]], None], params,
                    batch_size: int = 16, lookahead: int = 60, max_pending: int = 2
                    ) -> tuple[Any, dict[str, Any]]:
    """Track ``frames`` and score every tracked face in the same pass.

    ``track(frames=..., on_row=...)`` runs the tracker (a partial of
    :func:`~neopain.faces.track.track_video`) and returns its result; ``prepare(image,
    landmarks)`` makes the network input of one face (aligned crop, JPEG round trip);
    ``score(batch, positions)`` scores a batch (positions: row numbers of the track
    table).  Returns ``(tracker's result, stats)`` with ``landmarks`` (row -> the smoothed
    landmarks the face was scored with), ``n_scored``, ``max_buffered`` frames,
    ``max_lag`` rows and ``batches_by_tracker``."""
    buffer: dict[int, np.ndarray] = {}
    used: dict[int, np.ndarray] = {}
    pending_x: list[np.ndarray] = []
    pending_pos: list[int] = []
    stats = {"n_scored": 0, "max_buffered": 0}
    scorer = _Scorer(score, max_pending)

    def source() -> Iterator[Frame]:
        for fr in frames:
            buffer[fr.index] = fr.image
            stats["max_buffered"] = max(stats["max_buffered"], len(buffer))
            yield fr

    def flush() -> None:
        if pending_x:
            scorer.put(np.stack(pending_x), list(pending_pos))
            stats["n_scored"] += len(pending_x)
            pending_x.clear()
            pending_pos.clear()

    def emit(pos: int, row: dict, lm: np.ndarray | None) -> None:
        img = buffer.pop(row["frame"], None)
        if lm is None or img is None:
            return
        used[pos] = lm
        pending_x.append(prepare(img, lm))
        pending_pos.append(pos)
        if len(pending_x) >= batch_size:
            flush()

    smoother = LookaheadSmoother(params, emit, lookahead=lookahead)
    try:
        result = track(frames=source(), on_row=smoother.push)
        smoother.close()
        flush()
    finally:
        buffer.clear()
        scorer.close()
    stats.update(landmarks=used, max_lag=smoother.max_lag, batches_by_tracker=scorer.by_caller)
    return result, stats
