"""Bedside prediction: a pain timeline for a new video from an exported model.

:class:`Predictor` runs the study's pipeline on a source (video file, frame folder or
image) with the settings stored in the artefact (:mod:`neopain.deploy.artefact`), reusing
the pipeline's own code (tracking and scoring: :mod:`neopain.deploy.facescoring`):

1. *track* (:func:`neopain.faces.track.track_video`, the study's tracker settings) on the
   decoded stream -- every frame, or every ``every``-th (the tracker then sees the
   subsampled stream: faster; its One-Euro smoothing only joins consecutive frames, so
   it is off for ``every > 1``); ``max_frames`` stops decoding after that many frames;
2. each tracked face is aligned (:func:`neopain.faces.crop.align`), JPEG-encoded at the
   study's quality (the network saw JPEG crops in training) and run in batches of
   ``batch_size`` through the backbone (``neopain.features.extract``: the same decode and
   :class:`~neopain.features.extract.Runner`); features are cast to the study's feature dtype,
   then selected, scaled, classified and calibrated
   (:class:`neopain.deploy.exported.ExportedModel`).  Steps 1 and 2 share ONE decode pass
   (:mod:`neopain.deploy.stream`, ``single_pass``, default): faces are scored while the video
   is tracked, with the tracker's smoothed landmarks (a bounded ``lookahead``), on a
   second thread; ``single_pass: false`` tracks first and decodes again to score;
3. per frame: ``ok`` (a face was tracked and scored), ``reason`` (the tracker's:
   ``no_face``, ``occluded``, ...), ``score`` (raw classifier score), ``probability``
   (calibrated probability of pain), ``smoothed`` and ``pred``; frames without a face
   have NaN / null there -- never 0; with the tracker's face mesh also ``pspi`` (the
   PSPI-like facial-action composite over the video's own baseline,
   :mod:`neopain.features.actions`) and the head pose ``yaw``/``pitch``/``roll``
   (degrees), beside the model's probability;
4. the *smoother* (:mod:`neopain.deploy.timeline`): a centred moving average of the
   calibrated probability over ``smooth_seconds`` (frames with ``|t - t0| <=
   smooth_seconds / 2``), computed within each *segment* -- a maximal run of
   consecutive processed frames that are all ``ok`` -- so it never bridges a tracking
   gap: gaps stay gaps (NaN);
5. *epochs*: consecutive windows of ``epoch_seconds`` (default 20 s, the iCOPEvid epoch)
   from the first frame's time (the last one ends one frame after the last frame), or the
   ``start``/``end`` seconds of a CSV (e.g. NIPS
   periods; optional ``label`` column kept). Per epoch: frames processed, ``n_ok``,
   ``coverage`` = ``n_ok / n_frames``, ``mean_probability`` (of the ok frames),
   ``pain_fraction`` (share of ok frames with ``pred`` 1) and the ``decision`` --
   ``mean_probability >= threshold`` (the artefact's threshold) -- when ``coverage >=
   min_coverage`` (default 0.5), else none (``status`` ``insufficient``).

With a *video-level* artefact (``export.configuration: nested``,
:mod:`neopain.deploy.videoexport`) steps 2-5 change: the frames' features are made relative
to the patient's *baseline* -- the median (and MAD) of the recording's own tracked
frames by default, or of a separate baseline recording of the same patient
(``baseline_video``, e.g. a rest recording; ``--baseline-video``) -- and pooled with
the model's statistics: each frame's ``score`` is the model's score of the ok frames
within ``window_seconds / 2`` of it (default 4 s window), ``probability`` its
calibration; each epoch's ``mean_probability`` is the calibrated score of the epoch's
ok frames pooled as one recording (the decision rule is unchanged). Columns are the
same. An ``actions/video`` or ``actions/pose`` model (one statistics row per training
recording) scores the statistics row of each block -- the whole recording (summary
``baseline.recording_probability``), each epoch, each window -- computed as if the block
were a recording of its own (:func:`neopain.deploy.actionsmodel.block_statistics`; baseline:
the baseline recording's whole-recording row).

Outputs: :mod:`neopain.deploy.outputs` (tables, timeline PNG and HTML page, summary, and
only with ``annotate`` the annotated video); batches, the CLI and the rule:
:mod:`neopain.deploy.batch`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from neopain.deploy.exported import ExportedModel
from neopain.deploy.facescoring import FaceScorer, PredictionError
from neopain.deploy.timeline import FRAME_COLUMNS, epoch_table, read_epochs, segments, \
    smooth_timeline

log = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    every: int = 1
    max_frames: int | None = None
    epoch_seconds: float = 20.0
    epochs: str | None = None          #: CSV with start, end (seconds) [, label]
    smooth_seconds: float = 2.0
    min_coverage: float = 0.5
    window_seconds: float = 4.0       #: video-level models: pooling window of the timeline
    baseline_video: str | None = None  #: video-level models: the patient's baseline recording
    batch_size: int = 16
    device: str = "cpu"
    precision: str = "fp32"
    weights_dir: str | None = None
    annotate: bool = False
    threads: int | None = None        #: torch CPU threads (None: OMP_NUM_THREADS if set)
    single_pass: bool = True          #: track and score in one decode pass (neopain.deploy.stream)
    lookahead: int = 60               #: single pass: frames of smoother lookahead

    def __post_init__(self):
        if int(self.every) < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.epoch_seconds <= 0 or self.smooth_seconds < 0 or self.window_seconds <= 0:
            raise ValueError("epoch_seconds and window_seconds must be > 0 and "
                             "smooth_seconds >= 0")
        if self.baseline_video is not None and not Path(self.baseline_video).exists():
            raise ValueError(f"baseline video {self.baseline_video}: not found")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1], got {self.min_coverage}")
        if int(self.lookahead) < 1:
            raise ValueError(f"lookahead must be >= 1, got {self.lookahead}")


#: the facial-action columns (neopain.features.actions, from the tracker's face mesh; NaN without one)
ACTION_COLUMNS = ("pspi", "yaw", "pitch", "roll")


def action_columns(track: pa.Table) -> dict[str, np.ndarray]:
    """PSPI-like composite (per-video baseline) and head pose per track row (NaN where
    the frame has no mesh), from the track table's face mesh (:mod:`neopain.features.actions`)."""
    from neopain.features.actions import video_actions

    frames = track.column("frame").to_pylist()
    out = {k: np.full(len(frames), np.nan) for k in ACTION_COLUMNS}
    act = video_actions(track, None, {"texture": False})
    pos = {int(f): i for i, f in enumerate(frames)}
    idx = [pos[int(f)] for f in act.column("frame").to_pylist()]
    for k in ACTION_COLUMNS:
        out[k][idx] = act.column(k).to_numpy(zero_copy_only=False)
    return out


class Predictor:
    """Loads the tracker and the backbone of an artefact once (:class:`FaceScorer`); runs
    videos through them into a timeline."""

    def __init__(self, model: ExportedModel, options: PredictOptions | None = None):
        self.model = model
        self.opt = options or PredictOptions()
        self.faces = FaceScorer(model, self.opt)
        self.device = self.faces.device
        self.weights_sha256 = self.faces.weights_sha256
        self.video = model.video                 # a video-level model, or None
        # an actions statistics table (actions/video, actions/pose): rows made per block
        self.statistics = self.faces.statistics
        self._baseline: dict | None = None       # video level: the baseline recording's

    def close(self):
        self.faces.close()

    def predict(self, path: str | os.PathLike, video_id: str | None = None) -> dict[str, Any]:
        """Run one source; returns ``{"frames": DataFrame, "epochs": DataFrame, "summary":
        dict, "track": pa.Table}``. A source that cannot be opened at all raises
        :class:`~neopain.faces.video.VideoError`; one that fails part-way is returned with
        ``summary["status"] == "error"`` and the frames decoded before the problem."""
        path = Path(path)
        video_id = video_id or path.stem
        t0 = time.perf_counter()
        src = self.faces.track_and_score(path)
        table, qc, tr, score, feat_ok = src.table, src.qc, src.tr, src.score, src.feat_ok
        n_scored, timing = src.n_scored, src.timing
        n = len(tr["frame"])
        ok = np.asarray(tr["ok"], bool) & feat_ok
        # tracked but not scored: non-finite features, or the source changed under us
        reason = [r if (o or r != "ok") else "not_scored" for r, o in zip(tr["reason"], ok)]
        ts = np.asarray(tr["timestamp"], np.float64)
        pooled, base = None, None
        if self.video is not None:
            score, pooled, base = self._video_scores(src.features, ts, ok)
        prob = self.model.calibrator.apply(score)
        prob[~ok] = np.nan
        score[~ok] = np.nan
        smoothed = smooth_timeline(ts, prob, ok, self.opt.smooth_seconds)
        pred = pd.array([int(p >= self.model.threshold) if o else None
                         for p, o in zip(prob, ok)], dtype="Int8")
        frames = pd.DataFrame({
            "video_id": video_id, "frame": np.asarray(tr["frame"], np.int32), "timestamp": ts,
            "ok": ok, "reason": reason, "score": score, "probability": prob,
            "smoothed": smoothed, "pred": pred,
            "segment": segments(ok).astype(np.int32), **action_columns(table)},
            columns=FRAME_COLUMNS)
        ep = read_epochs(self.opt.epochs) if self.opt.epochs else None
        epochs = epoch_table(frames, self.model.threshold, self.model.labels,
                             self.opt.epoch_seconds, ep, self.opt.min_coverage, pooled)
        epochs.insert(0, "video_id", video_id)
        elapsed = time.perf_counter() - t0
        n_ok = int(ok.sum())
        status = ("error" if qc["status"] == "error" else "no_face" if n_ok == 0 else
                  "ok" if n and n_ok / n >= 0.5 else "low_success")
        summary = {
            "video_id": video_id, "path": str(path), "status": status, "error": qc["error"],
            "n_frames_processed": n, "n_ok": n_ok,
            "success_rate": n_ok / n if n else 0.0,
            "reasons": {r: reason.count(r) for r in sorted(set(reason))},
            "n_epochs": len(epochs),
            "epochs_with_decision": int(epochs["decision"].notna().sum()),
            "epochs_pain": int((epochs["decision"] == 1).sum()),
            "threshold": self.model.threshold, "labels": list(self.model.labels),
            "model": {"file": str(self.model.path), "sha256": self.model.sha256,
                      "name": self.model.info.get("name"),
                      "format_version": self.model.manifest["format_version"]},
            "backbone_weights_sha256": self.weights_sha256,
            "options": {k: v for k, v in asdict(self.opt).items() if k != "weights_dir"},
            "device": self.device.type,
            "smoother": f"centred moving average over {self.opt.smooth_seconds:g} s within "
                        "runs of consecutive ok frames (never across a gap)",
            "epoch_rule": ((f"mean calibrated probability of the ok frames >= threshold "
                            if self.video is None else "calibrated probability of the "
                            "epoch's ok frames pooled as one recording >= threshold ")
                           + f"{self.model.threshold:.4f} when coverage >= "
                           f"{self.opt.min_coverage:g}"),
            "level": self.model.level,
            "baseline": base,
            "timing_s": {**{k: v for k, v in timing.items() if k != "single_pass"},
                         "total": elapsed},
            "single_pass": timing["single_pass"],
            "frames_per_s": n / elapsed if elapsed > 0 else float("nan"),
            "n_scored": n_scored,
            "pspi_peak": (float(np.nanmax(frames["pspi"])) if frames["pspi"].notna().any()
                          else None),
        }
        log.info("%s: %d/%d processed frames scored, %d epochs, %.1f frames/s (%s)", path,
                 n_ok, n, len(epochs), summary["frames_per_s"], status)
        return {"frames": frames, "epochs": epochs, "summary": summary, "track": table}

    def _video_scores(self, F: np.ndarray, ts: np.ndarray, ok: np.ndarray):
        """Video level: (per-frame window scores, the epochs' pooled probability
        function, the baseline's description)."""
        from neopain.deploy.videoexport import window_scores

        if self.statistics:
            return self._statistics_scores(F, ts, ok)
        vs = self.video
        if vs.baseline == "none":                # the chosen model takes no baseline
            ref, source, n_ref = (np.zeros(F.shape[1]), np.ones(F.shape[1])), \
                "not used (baseline none)", 0
        elif self.opt.baseline_video is not None:
            ref, n_ref = self._baseline_video_reference()
            source = str(self.opt.baseline_video)
        elif ok.any():
            ref, source, n_ref = vs.reference(F[ok]), "the recording itself", int(ok.sum())
        else:
            ref, source, n_ref = None, "the recording itself", 0
        base = {"method": vs.baseline, "source": source, "n_frames": n_ref,
                "pooling": self.model.info["video"]["pooling"],
                "window_seconds": self.opt.window_seconds}
        if ref is None:
            return np.full(len(ts), np.nan), None, base
        rel = np.full(F.shape, np.nan)
        rel[ok] = vs.relative(F[ok], ref)
        score = window_scores(vs, rel, ts, ok, self.opt.window_seconds)
        cal = self.model.calibrator

        def pooled(mask):
            return float(cal.apply(np.array([vs.score_block(rel[mask])]))[0])

        return score, pooled, base

    def baseline_features(self, path) -> np.ndarray:
        """Features of a baseline recording's tracked frames (video-level models)."""
        path = Path(path)
        src = self.faces.track_and_score(path, keep_features=True)
        mask = np.asarray(src.tr["ok"], bool) & src.feat_ok
        F = src.features[mask]
        if self.statistics and len(F):           # the baseline recording's statistics row
            F = self._block_row(src.statistics_input,
                                np.asarray(src.tr["timestamp"], np.float64), mask)[None]
        if not len(F):
            raise PredictionError(f"baseline video {path}: no frame with a tracked face "
                                  f"({src.qc.get('error') or 'no face'}); cannot take a baseline")
        log.info("baseline from %s: %d frames with a face", path, len(F))
        return F

    def _baseline_video_reference(self) -> tuple[tuple, int]:
        """The baseline recording's reference statistics and frame count (computed once)."""
        if self._baseline is None:
            ref_F = self.baseline_features(self.opt.baseline_video)
            self._baseline = {"ref": self.video.reference(ref_F), "n_frames": len(ref_F)}
        return self._baseline["ref"], self._baseline["n_frames"]

    def _block_row(self, FP: np.ndarray, ts: np.ndarray, rows) -> np.ndarray:
        from neopain.deploy.actionsmodel import block_statistics

        return block_statistics(FP, ts, rows, self.model.info["backbone"],
                                self.video.n_frame_pose > 0)

    def _statistics_scores(self, FP: np.ndarray, ts: np.ndarray, ok: np.ndarray):
        """:meth:`_video_scores` of an actions statistics model: each block (the whole
        recording, an epoch, the window around a frame) becomes the stage's statistics
        row of that block as if it were a recording of its own, relative to the
        baseline recording's whole-recording row (or the recording's own)."""
        vs, cal = self.video, self.model.calibrator
        dim = int(self.model.info["backbone"]["feature_dim"]) + (
            vs.n_frame_pose if vs.n_frame_pose else 0)
        base = {"method": vs.baseline, "source": "the recording itself", "n_frames": 0,
                "pooling": self.model.info["video"]["pooling"],
                "window_seconds": self.opt.window_seconds,
                "statistics": "actions statistics of each block (whole recording, epoch, "
                              "window) computed as if it were a recording of its own (its "
                              "own baseline percentile); the model was trained on whole "
                              "recordings, so only blocks as long as the training "
                              "recordings are on the training rows' scale",
                "recording_score": None, "recording_probability": None}
        if not ok.any():
            return np.full(len(ts), np.nan), None, base
        whole = self._block_row(FP, ts, ok)[None]
        if vs.baseline == "none":
            ref, base["source"] = (np.zeros(dim), np.ones(dim)), "not used (baseline none)"
        elif self.opt.baseline_video is not None:
            ref, base["n_frames"] = self._baseline_video_reference()
            base["source"] = str(self.opt.baseline_video)
        else:
            ref, base["n_frames"] = vs.reference(whole), 1

        def raw(rows) -> float:
            return vs.score_block(vs.relative(self._block_row(FP, ts, rows)[None], ref))

        rec = vs.score_block(vs.relative(whole, ref))
        base["recording_score"] = rec
        base["recording_probability"] = float(cal.apply(np.array([rec]))[0])
        idx = np.flatnonzero(ok)
        t, half = ts[idx], self.opt.window_seconds / 2.0
        lo = np.searchsorted(t, t - half - 1e-9, side="left")
        hi = np.searchsorted(t, t + half + 1e-9, side="right")
        score = np.full(len(ts), np.nan)
        for j, i in enumerate(idx):
            score[i] = raw(idx[lo[j]:hi[j]])

        def pooled(mask):
            return float(cal.apply(np.array([raw(np.flatnonzero(mask))]))[0])

        return score, pooled, base

    def annotate(self, path: str | os.PathLike, result: dict, out: str | os.PathLike) -> Path:
        """Write the processed frames with box, landmarks and probability (PHI!)."""
        from neopain.deploy.outputs import write_annotated

        return write_annotated(self.faces.frames(path), result, self.model.threshold, out)
