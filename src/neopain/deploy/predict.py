"""Bedside prediction: a pain timeline for a new video from an exported model.

:class:`Predictor` runs the study's pipeline on a source (video file, frame folder or
image) with the settings stored in the artefact (``neopain.deploy.export``), reusing the
pipeline's own code:

1. *track* (:func:`neopain.faces.track.track_video`, the study's tracker settings) on the
   decoded stream -- every frame, or every ``every``-th (the tracker then sees the
   subsampled stream: faster; its One-Euro smoothing only joins consecutive frames, so
   it is off for ``every > 1``); ``max_frames`` stops decoding after that many frames;
2. each tracked face is aligned (:func:`neopain.faces.crop.align`), JPEG-encoded at the
   study's quality (the network saw JPEG crops in training) and run in batches of
   ``batch_size`` through the backbone (``neopain.features.extract``: the same decode and
   :class:`~neopain.features.extract.Runner`); features are cast to the study's feature dtype,
   then selected, scaled, classified and calibrated
   (:class:`neopain.deploy.export.ExportedModel`).  Steps 1 and 2 share ONE decode pass
   (:mod:`neopain.deploy.stream`, ``single_pass``, default): faces are scored while the video
   is tracked, with the tracker's smoothed landmarks (a bounded ``lookahead``), on a
   second thread; ``single_pass: false`` tracks first and decodes again to score;
3. per frame: ``ok`` (a face was tracked and scored), ``reason`` (the tracker's:
   ``no_face``, ``occluded``, ...), ``score`` (raw classifier score), ``probability``
   (calibrated probability of pain), ``smoothed`` and ``pred``; frames without a face
   have NaN / null there -- never 0; with the tracker's face mesh also ``pspi`` (the
   PSPI-like facial-action composite over the video's own baseline, :mod:`neopain.features.actions`)
   and the head pose ``yaw``/``pitch``/``roll`` (degrees), beside the model's probability;
4. the *smoother*: a centred moving average of the calibrated probability over
   ``smooth_seconds`` (frames with ``|t - t0| <= smooth_seconds / 2``), computed within
   each *segment* -- a maximal run of consecutive processed frames that are all ``ok`` --
   so it never bridges a tracking gap: gaps stay gaps (NaN);
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

Outputs (:func:`write_outputs`, for source ``NAME``): ``NAME.frames.{parquet,csv}``,
``NAME.epochs.{parquet,csv}``, ``NAME.timeline.png`` (probability, smoothed line broken
at gaps, tracking gaps shaded, threshold, epoch decisions; with the face mesh the
PSPI-like intensity on a right-hand axis), ``NAME.timeline.html`` (the
PNG inlined as base64 plus the tables; no script, no external resource),
``NAME.summary.json``; and only with ``annotate`` (faces are PHI; off by default)
``NAME.annotated.mp4`` (box, landmarks and probability drawn on the processed frames).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from neopain.deploy.export import ArtefactError, ExportedModel
from neopain.faces.video import Frame, VideoError, iter_frames

log = logging.getLogger(__name__)

__all__ = ["PredictOptions", "Predictor", "PredictionError", "epoch_table", "read_epochs",
           "smooth_timeline", "write_outputs", "predict_paths"]


class PredictionError(RuntimeError):
    """The pipeline cannot run with this artefact here (weights, tracker mismatch)."""


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


FRAME_COLUMNS = ["video_id", "frame", "timestamp", "ok", "reason", "score", "probability",
                 "smoothed", "pred", "segment", "pspi", "yaw", "pitch", "roll"]
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


# ----------------------------------------------------------------------------
# timeline arithmetic
# ----------------------------------------------------------------------------
def segments(ok: np.ndarray) -> np.ndarray:
    """Segment id of each frame: runs of consecutive ok frames numbered 0, 1, ...; -1 for
    frames that are not ok."""
    ok = np.asarray(ok, dtype=bool)
    starts = ok & ~np.r_[False, ok[:-1]]
    seg = np.cumsum(starts) - 1
    return np.where(ok, seg, -1)


def smooth_timeline(t: np.ndarray, p: np.ndarray, ok: np.ndarray, window: float) -> np.ndarray:
    """Centred moving average of ``p`` over ``window`` seconds within each segment (see
    the module docstring); NaN where not ok."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.asarray(ok, dtype=bool) & np.isfinite(p)
    out = np.full(len(p), np.nan)
    seg = segments(ok)
    half = window / 2.0
    for s in range(seg.max() + 1 if len(seg) else 0):
        idx = np.flatnonzero(seg == s)
        ts, ps = t[idx], p[idx]
        c = np.r_[0.0, np.cumsum(ps)]
        lo = np.searchsorted(ts, ts - half - 1e-9, side="left")
        hi = np.searchsorted(ts, ts + half + 1e-9, side="right")
        out[idx] = (c[hi] - c[lo]) / (hi - lo)
    return out


def read_epochs(path: str | os.PathLike) -> pd.DataFrame:
    """Epochs from a CSV (or TSV) with columns ``start``, ``end`` (seconds) [, ``label``]."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: epochs file not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    df = pd.read_csv(path, sep=sep, comment="#")
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in ("start", "end") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need start, end in "
                         "seconds; optional label)")
    for i, r in df.iterrows():
        try:
            s, e = float(r["start"]), float(r["end"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: row {i + 2}: start/end are not numbers") from None
        if not (math.isfinite(s) and math.isfinite(e) and e > s):
            raise ValueError(f"{path}: row {i + 2}: need finite start < end, got {s}, {e}")
    out = pd.DataFrame({"start": df["start"].astype(float), "end": df["end"].astype(float)})
    if "label" in df.columns:
        out["label"] = df["label"].astype(str)
    return out.reset_index(drop=True)


def epoch_table(frames: pd.DataFrame, threshold: float, labels: tuple[str, str],
                epoch_seconds: float = 20.0, epochs: pd.DataFrame | None = None,
                min_coverage: float = 0.5, pooled=None) -> pd.DataFrame:
    """Per-epoch decisions (see the module docstring). ``pooled``: for video-level
    models, a function of the epoch's ok-frame mask giving its pooled probability
    (``mean_probability``)."""
    t = frames["timestamp"].to_numpy(np.float64)
    if epochs is None:
        if len(t):
            t0, t1 = float(t.min()), float(t.max())
            dt = float(np.median(np.diff(np.sort(t)))) if len(t) > 1 else 0.0
            n = max(1, int(math.floor((t1 - t0) / epoch_seconds)) + 1)
            starts = t0 + epoch_seconds * np.arange(n)
            # the last epoch ends with the video (after its last frame): it may be shorter
            ends = np.minimum(starts + epoch_seconds, t1 + max(dt, 1e-6))
            epochs = pd.DataFrame({"start": starts, "end": ends})
        else:
            epochs = pd.DataFrame({"start": [], "end": []})
    rows = []
    ok = frames["ok"].to_numpy(bool)
    prob = frames["probability"].to_numpy(np.float64)
    pred = frames["pred"].to_numpy("float64", na_value=np.nan)
    for i, e in epochs.reset_index(drop=True).iterrows():
        m = (t >= e["start"]) & (t < e["end"])
        mo = m & ok
        n, n_ok = int(m.sum()), int(mo.sum())
        cov = n_ok / n if n else 0.0
        mean_p = (float("nan") if not n_ok else float(pooled(mo)) if pooled is not None
                  else float(prob[mo].mean()))
        row = {"epoch": i, "start": float(e["start"]), "end": float(e["end"])}
        if "label" in epochs.columns:
            row["label"] = e["label"]
        enough = n_ok > 0 and cov >= min_coverage
        row.update({
            "n_frames": n, "n_ok": n_ok, "coverage": cov, "mean_probability": mean_p,
            "max_probability": float(prob[mo].max()) if n_ok else float("nan"),
            "pain_fraction": float(np.mean(pred[mo])) if n_ok else float("nan"),
            "decision": (int(mean_p >= threshold) if enough else None),
            "status": (labels[1] if enough and mean_p >= threshold else
                       labels[0] if enough else "insufficient"),
        })
        rows.append(row)
    cols = ["epoch", "start", "end"] + (["label"] if "label" in epochs.columns else []) + [
        "n_frames", "n_ok", "coverage", "mean_probability", "max_probability",
        "pain_fraction", "decision", "status"]
    df = pd.DataFrame(rows, columns=cols)
    df["decision"] = df["decision"].astype("Int8")
    return df


# ----------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------
def _subsample(frames: Iterable[Frame], every: int) -> Iterator[Frame]:
    for fr in frames:
        if fr.index % every == 0:
            yield fr


class Predictor:
    """Loads the tracker and the backbone of an artefact once; runs videos through them."""

    def __init__(self, model: ExportedModel, options: PredictOptions | None = None):
        import torch

        from neopain.features.backbones import WeightsError, load_backbone
        from neopain.features.extract import Runner, pick_device
        from neopain.faces.detectors.registry import build_detector
        from neopain.faces.trackparams import params_from_config

        self.model = model
        self.opt = options or PredictOptions()
        # explicit thread count (--threads, else OMP_NUM_THREADS), whatever libraries
        # loaded earlier in the process left torch with
        threads = self.opt.threads or os.environ.get("OMP_NUM_THREADS")
        if threads and str(threads).isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        info = model.info
        b = info["backbone"]
        self._tmp = None
        weights_dir = self.opt.weights_dir
        emb = model.embedded_weights()
        if emb:
            self._tmp = tempfile.TemporaryDirectory(prefix="neopain-weights-")
            for name, data in emb.items():
                (Path(self._tmp.name) / Path(name).name).write_bytes(data)
            weights_dir = self._tmp.name
        if weights_dir is None:
            weights_dir = "resources/weights"
        self.actions = b["name"] == "actions"   # features from the tracker's face mesh
        try:
            net, sources = ((None, {f"weights:{b['weights_file']}": b["weights_sha256"]})
                            if self.actions else
                            load_backbone(b["name"], [b["layer"]], weights_dir,
                                          cfg=dict(b.get("cfg") or {})))
        except WeightsError as exc:
            raise PredictionError(f"{model.path}: backbone weights: {exc}") from None
        got = sources.get(f"weights:{b['weights_file']}")
        if got != b["weights_sha256"]:
            raise PredictionError(
                f"{model.path}: the backbone weights found ({b['weights_file']}, sha256 {got}) "
                f"are not the ones the model was trained with (sha256 {b['weights_sha256']})")
        self.weights_sha256 = got
        device = pick_device(self.opt.device)
        self.device = device
        self.runner = Runner(net, device, self.opt.precision) if net is not None else None
        self.input_size = net.spec.input_size if net is not None else 0
        self.layer = b["layer"]
        tcfg = {**dict(info.get("track") or {}), "device": str(device.type)}
        self.detector, self.refiner = build_detector(tcfg)
        self.track_params = params_from_config(tcfg)
        self._check_tracker()
        if self.actions:
            from neopain.deploy.actionsmodel import check_refiner

            try:
                check_refiner(self.refiner, b)
            except ValueError as exc:
                raise PredictionError(f"{model.path}: {exc}") from None
        self.crop_size = int((info.get("crop") or {}).get("size", 224))
        self.jpeg_quality = int((info.get("crop") or {}).get("jpeg_quality", 95))
        self.dtype = np.float16 if b.get("dtype") == "float16" else np.float32
        self.reduce = 1
        if b.get("fast_decode", True) and net is not None:
            from neopain.features.extract import reduce_factor

            self.reduce = reduce_factor(self.crop_size, self.input_size)
        self.fps_for_images = float(info.get("fps_for_images", 30.0))
        self.video = model.video                 # a video-level model, or None
        self._F: np.ndarray | None = None        # video level: features of the frames
        self._baseline: dict | None = None       # video level: the baseline recording's
        # an actions statistics table (actions/video, actions/pose): rows made per block
        self.statistics = self.actions and b["layer"] != "frame"
        self._Fs: np.ndarray | None = None
        if self.statistics and self.video is None:
            raise PredictionError(f"{model.path}: actions/{b['layer']} holds whole-recording "
                                  "statistics; only a video-level artefact can score it")

    def _check_tracker(self) -> None:
        want = dict(self.model.info.get("tracker_weights") or {})
        have = dict(self.detector.info().get("weights") or {})
        if self.refiner is not None:
            have.update(self.refiner.info().get("weights") or {})
        # weights the running tracker reports must be those of the study (other files of
        # the study's provenance -- e.g. of another stage -- are not the tracker's)
        bad = {k: (v, have[k]) for k, v in want.items() if k in have and have[k] != v}
        if bad:
            k, (v, h) = next(iter(bad.items()))
            raise PredictionError(
                f"{self.model.path}: tracker weights {k} here have sha256 {h}, the model was "
                f"trained with {v}")

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --------------------------------------------------------------------------
    def _frames(self, path) -> Iterator[Frame]:
        src = iter_frames(path, fps_for_images=self.fps_for_images,
                          max_frames=self.opt.max_frames)
        return _subsample(src, int(self.opt.every))

    def predict(self, path: str | os.PathLike, video_id: str | None = None) -> dict[str, Any]:
        """Run one source; returns ``{"frames": DataFrame, "epochs": DataFrame, "summary":
        dict, "track": pa.Table}``. A source that cannot be opened at all raises
        :class:`~neopain.faces.video.VideoError`; one that fails part-way is returned with
        ``summary["status"] == "error"`` and the frames decoded before the problem."""
        path = Path(path)
        video_id = video_id or path.stem
        t0 = time.perf_counter()
        table, qc, tr, score, feat_ok, n_scored, timing = self._track_and_score(path)
        n = len(tr["frame"])
        ok = np.asarray(tr["ok"], bool) & feat_ok
        # tracked but not scored: non-finite features, or the source changed under us
        reason = [r if (o or r != "ok") else "not_scored" for r, o in zip(tr["reason"], ok)]
        ts = np.asarray(tr["timestamp"], np.float64)
        pooled, base = None, None
        if self.video is not None:
            score, pooled, base = self._video_scores(self._F, ts, ok)
            self._F = None
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
            if self._baseline is None:
                ref_F = self.baseline_features(self.opt.baseline_video)
                self._baseline = {"ref": vs.reference(ref_F), "n_frames": len(ref_F)}
            ref, source, n_ref = (self._baseline["ref"], str(self.opt.baseline_video),
                                  self._baseline["n_frames"])
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
        _, qc, tr, _, feat_ok, _, _ = self._track_and_score(path, keep_features=True)
        mask = np.asarray(tr["ok"], bool) & feat_ok
        F, self._F = self._F[mask], None
        if self.statistics and len(F):           # the baseline recording's statistics row
            F = self._block_row(self._Fs, np.asarray(tr["timestamp"], np.float64), mask)[None]
        self._Fs = None
        if not len(F):
            raise PredictionError(f"baseline video {path}: no frame with a tracked face "
                                  f"({qc.get('error') or 'no face'}); cannot take a baseline")
        log.info("baseline from %s: %d frames with a face", path, len(F))
        return F

    def _track_and_score(self, path: Path, keep_features: bool = False):
        """Track ``path`` and score its tracked faces: ``(table, qc, tr, score, feat_ok,
        n_scored, timing)`` (``tr``: the table's columns as lists; video level and
        ``keep_features``: the features in ``self._F``).  One decode pass unless
        ``single_pass`` is off."""
        from functools import partial

        from neopain.faces.track import track_video

        frames_iter = self._frames(path)        # raises now for a missing path
        track = partial(track_video, path, self.detector, params=self.track_params,
                        refiner=self.refiner, fps_for_images=self.fps_for_images,
                        on_error="record")
        keep = keep_features or self.video is not None
        dim = int(self.model.info["backbone"]["feature_dim"]) if keep else 0
        t0 = time.perf_counter()
        # an actions model reads the whole track table's meshes (and crops for texture):
        # it scores after tracking
        single = self.opt.single_pass and not self.actions
        if single:
            from neopain.deploy.stream import track_and_score

            got: dict[int, tuple[float, bool, np.ndarray | None]] = {}

            def score_batch(batch: np.ndarray, positions: list[int]) -> None:
                F, s, fin = self._score_batch(batch, scale=not keep)
                for j, p in enumerate(positions):
                    got[p] = (s[j], bool(fin[j]), F[j] if keep else None)

            (table, qc), st = track_and_score(
                frames_iter, track, self._network_input, score_batch, self.track_params,
                batch_size=self.opt.batch_size, lookahead=int(self.opt.lookahead))
        else:
            table, qc = track(frames=frames_iter)
        t_track = time.perf_counter() - t0
        if qc["status"] == "error" and qc["n_frames"] == 0:
            raise VideoError(path, qc["error"].split(": ", 1)[-1] if qc["error"] else
                             "no frame could be decoded")
        tr = table.select(["frame", "timestamp", "ok", "reason", "landmarks", "x1", "y1",
                           "x2", "y2"]).to_pydict()
        n = len(tr["frame"])
        score = np.full(n, np.nan)
        feat_ok = np.zeros(n, dtype=bool)
        if keep:
            self._F = np.full((n, dim), np.nan, np.float32)
        t1 = time.perf_counter()
        if single:
            for p, (s, fin, f) in got.items():
                score[p], feat_ok[p] = s, fin
                if keep:
                    self._F[p] = f
            n_scored = st["n_scored"]
            dev = max((float(np.abs(lm.ravel() - np.asarray(tr["landmarks"][p])).max())
                       for p, lm in st["landmarks"].items()), default=0.0)
            info = {"lookahead": int(self.opt.lookahead), "max_buffered_frames":
                    st["max_buffered"], "landmark_max_dev_px": dev,
                    "batches_scored_by_tracking_thread": st["batches_by_tracker"]}
            if dev > 0.01:
                log.warning("%s: streamed landmarks differ from the track table's by up to "
                            "%.3g px (lookahead %d)", path, dev, self.opt.lookahead)
            timing = {"track_and_score": t_track, "single_pass": info}
        else:
            self._track = table
            n_scored = self._score_frames(path, tr, score, feat_ok)
            timing = {"track": t_track, "features_classify": time.perf_counter() - t1,
                      "single_pass": None}
        return table, qc, tr, score, feat_ok, n_scored, timing

    def _network_input(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One face's network input: aligned crop, JPEG round trip at the study's quality."""
        from neopain.faces.crop import align, encode_jpeg
        from neopain.features.extract import decode_batch

        crop, _ = align(image, np.asarray(landmarks, np.float64).reshape(5, 2),
                        self.crop_size)
        return decode_batch([encode_jpeg(crop, self.jpeg_quality)], self.input_size,
                            self.reduce)[0]

    def _score_batch(self, batch: np.ndarray, scale: bool = True):
        """``(features, scores, finite)`` of a batch of network inputs (scores NaN for
        video-level models or ``scale`` off: scored after the pass)."""
        feats = self.runner(batch)[self.layer]
        F = feats.float().cpu().numpy().astype(self.dtype).astype(np.float32)
        fin = np.isfinite(F).all(axis=1)
        s = np.full(len(F), np.nan)
        if scale and self.video is None and fin.any():
            s[fin] = self.model.score(F[fin])
        return F, s, fin

    def _score_frames(self, path: Path, tr: dict, score: np.ndarray,
                      feat_ok: np.ndarray) -> int:
        """Second pass: align, JPEG round trip, backbone, model -- in batches."""
        from neopain.faces.crop import align, encode_jpeg
        from neopain.features.extract import decode_batch

        if self.actions:
            return self._score_actions(path, score, feat_ok)

        pos = {int(f): i for i, f in enumerate(tr["frame"])}
        want = {int(f) for f, o in zip(tr["frame"], tr["ok"]) if o}
        if not want:
            return 0
        last = max(want)
        jpegs: list[bytes] = []
        where: list[int] = []
        done = 0

        def flush():
            nonlocal done
            if not jpegs:
                return
            batch = decode_batch(jpegs, self.input_size, self.reduce)
            F, s, fin = self._score_batch(batch, scale=self._F is None)
            idx = np.asarray(where)
            if self._F is not None:            # video level: scored after the pass
                self._F[idx] = F
            score[idx] = s
            feat_ok[idx] = fin
            done += len(jpegs)
            jpegs.clear()
            where.clear()

        try:
            for fr in self._frames(path):
                if fr.index > last:
                    break
                if fr.index not in want:
                    continue
                i = pos[fr.index]
                if abs(fr.timestamp - tr["timestamp"][i]) > 1e-6:
                    raise PredictionError(
                        f"{path}: frame {fr.index} is at {fr.timestamp} s on the second pass "
                        f"but was tracked at {tr['timestamp'][i]} s (the file changed?)")
                lm = np.asarray(tr["landmarks"][i], np.float64).reshape(5, 2)
                crop, _ = align(fr.image, lm, self.crop_size)
                jpegs.append(encode_jpeg(crop, self.jpeg_quality))
                where.append(i)
                if len(jpegs) >= self.opt.batch_size:
                    flush()
        except VideoError:
            pass  # the tracking pass stopped at the same place and recorded the error
        flush()
        return done

    def _score_actions(self, path: Path, score: np.ndarray, feat_ok: np.ndarray) -> int:
        """An actions model: its features from the tracked frames' meshes
        (:func:`neopain.deploy.actionsmodel.frame_feature_matrix`), scored like the backbone's."""
        from neopain.deploy.actionsmodel import frame_feature_matrix

        frames = self._frames(path) if self.model.info["backbone"]["cfg"]["actions"].get(
            "texture", True) else None
        try:
            F, P = frame_feature_matrix(self._track, frames, self.model.info["backbone"],
                                        self.crop_size, self.jpeg_quality)
        except VideoError:   # the tracking pass stopped at the same place
            F, P = frame_feature_matrix(self._track, None, self.model.info["backbone"],
                                        self.crop_size, self.jpeg_quality)
        fin = np.isfinite(F).all(axis=1) & np.asarray(self._track.column("ok").to_pylist(),
                                                      bool)
        if self.statistics:               # frames with a mesh, for the block statistics
            fin = np.isfinite(P).all(axis=1) & np.asarray(
                self._track.column("ok").to_pylist(), bool)
            self._F = self._Fs = np.hstack([F, P])
        elif self._F is not None:
            if self.video.n_frame_pose:   # pose regressed out: frames carry their pose
                F = np.hstack([F, P])
                self._F = np.full(F.shape, np.nan, np.float32)
            self._F[fin] = F[fin]
        elif fin.any():
            score[fin] = self.model.score(F[fin])
        feat_ok[:] = fin
        return int(fin.sum())

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
            if self._baseline is None:
                ref_F = self.baseline_features(self.opt.baseline_video)
                self._baseline = {"ref": vs.reference(ref_F), "n_frames": len(ref_F)}
            ref, base["source"] = self._baseline["ref"], str(self.opt.baseline_video)
            base["n_frames"] = self._baseline["n_frames"]
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
        import cv2

        frames = result["frames"].set_index("frame")
        tr = result["track"].select(["frame", "ok", "x1", "y1", "x2", "y2",
                                     "landmarks"]).to_pydict()
        boxes = {f: (o, (x1, y1, x2, y2), lm) for f, o, x1, y1, x2, y2, lm in zip(
            tr["frame"], tr["ok"], tr["x1"], tr["y1"], tr["x2"], tr["y2"], tr["landmarks"])}
        out = Path(out)
        ts = result["frames"]["timestamp"].to_numpy()
        fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 10.0
        writer = None
        thr = self.model.threshold
        try:
            for fr in self._frames(path):
                if fr.index not in frames.index:
                    continue
                img = cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR)
                if writer is None:
                    h, w = img.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"),
                                             float(fps), (w, h))
                    if not writer.isOpened():
                        raise OSError(f"{out}: cannot open a video writer (mp4v)")
                row = frames.loc[fr.index]
                ok, box, lm = boxes.get(fr.index, (False, None, None))
                p = row["probability"]
                if ok and box is not None and lm is not None:
                    colour = (40, 40, 230) if p >= thr else (60, 200, 60)
                    x1, y1, x2, y2 = (int(round(v)) for v in box)
                    cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
                    for x, y in np.asarray(lm).reshape(5, 2):
                        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 0), -1)
                    text = f"P(pain) {p:.2f}"
                else:
                    text = f"no face ({row['reason']})"
                cv2.putText(img, f"t={fr.timestamp:.2f}s  {text}", (10, 30),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
                cv2.putText(img, f"t={fr.timestamp:.2f}s  {text}", (10, 30),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
                writer.write(img)
        except VideoError:
            pass
        finally:
            if writer is not None:
                writer.release()
        return out


# ----------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------
def plot_timeline(frames: pd.DataFrame, epochs: pd.DataFrame, threshold: float, path,
                  title: str) -> None:
    """The timeline PNG (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t = frames["timestamp"].to_numpy(np.float64)
    ok = frames["ok"].to_numpy(bool)
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / 30
    # gaps: runs of frames without a scored face
    i = 0
    while i < len(t):
        if ok[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(t) and not ok[j + 1]:
            j += 1
        ax.axvspan(t[i] - dt / 2, t[j] + dt / 2, color="0.85", lw=0, zorder=0)
        i = j + 1
    ax.plot(t[ok], frames["probability"].to_numpy()[ok], ".", ms=2.5, c="tab:blue",
            alpha=0.45, label="frame probability")
    ax.plot(t, frames["smoothed"].to_numpy(np.float64), "-", c="tab:blue", lw=1.8,
            label="smoothed (NaN at gaps)")
    ax.axhline(threshold, ls="--", c="tab:red", lw=1, label=f"threshold {threshold:.2f}")
    pspi = (frames["pspi"].to_numpy(np.float64) if "pspi" in frames else np.zeros(0))
    if np.isfinite(pspi).any():  # the PSPI-like facial-action intensity, own axis
        ax2 = ax.twinx()
        ax2.plot(t, pspi, "-", c="tab:purple", lw=0.9, alpha=0.8)
        ax2.set_ylabel("PSPI-like (IOD)", color="tab:purple", fontsize=8)
        ax2.set_ylim(0, max(float(np.nanmax(pspi)) * 1.1, 1e-3))
        ax2.tick_params(axis="y", colors="tab:purple", labelsize=7)
        ax.plot([], [], "-", c="tab:purple", lw=0.9, label="PSPI-like intensity (right axis)")
    for _, e in epochs.iterrows():
        colour = {1: "tab:red", 0: "tab:green"}.get(
            None if pd.isna(e["decision"]) else int(e["decision"]), "0.6")
        ax.axvspan(e["start"], e["end"], ymin=0.965, ymax=1.0, color=colour, lw=0,
                   alpha=0.9 if colour != "0.6" else 0.5)
        ax.axvline(e["start"], c="0.5", lw=0.5, ls=":")
    ends = [float(e) for e in epochs["end"]] + ([float(t.max()) + dt] if len(t) else [1.0])
    ax.set(xlim=(float(t.min()) - dt if len(t) else 0.0, max(ends)), ylim=(-0.02, 1.06),
           xlabel="time (s)", ylabel="P(pain)", title=title)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color="0.85", label="no face tracked (missing, not 0)"),
                Patch(color="tab:red", label="epoch: pain"),
                Patch(color="tab:green", label="epoch: no pain"),
                Patch(color="0.6", alpha=0.5, label="epoch: insufficient coverage")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
                s = "&ndash;"
            elif isinstance(v, float):
                s = f"{v:.3f}"
            else:
                s = html.escape(str(v))
            cells.append(f"<td>{s}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def timeline_html(png: bytes, summary: dict, epochs: pd.DataFrame) -> str:
    """A self-contained page: the PNG inlined, the summary and the epoch table."""
    s = summary
    facts = [
        ("video", s["path"]), ("status", s["status"] + (f": {s['error']}" if s["error"] else "")),
        ("frames processed", s["n_frames_processed"]),
        ("frames with a scored face", f"{s['n_ok']} ({100 * s['success_rate']:.1f}%)"),
        ("model", f"{s['model']['name']} (sha256 {s['model']['sha256'][:16]}...)"),
        ("threshold", f"{s['threshold']:.4f}"), ("smoother", s["smoother"]),
        ("epoch decision", s["epoch_rule"]),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts)
    img = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>neopain: {html.escape(s['video_id'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1100px}}
table{{border-collapse:collapse;margin:0.8em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;
font-size:0.9em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Pain timeline: {html.escape(s['video_id'])}</h1>
<p>Research software output, not a diagnosis. Grey bands: no face tracked (missing values,
not zero).</p>
<img alt="pain probability timeline" src="data:image/png;base64,{img}">
<h2>Summary</h2><table>{rows}</table>
<h2>Epochs</h2>{_html_table(epochs)}
</body></html>
"""


def predict_paths(out_dir: str | os.PathLike, video_id: str) -> dict[str, Path]:
    out = Path(out_dir)
    return {k: out / f"{video_id}.{k.replace('_', '.')}" for k in (
        "frames_parquet", "frames_csv", "epochs_parquet", "epochs_csv", "timeline_png",
        "timeline_html", "summary_json")}


def write_outputs(result: dict, out_dir: str | os.PathLike, model: ExportedModel,
                  source_sha256: str | None = None) -> dict[str, Path]:
    """Write every output of one prediction into ``out_dir`` (atomic per file)."""
    from neopain.core import provenance

    s = result["summary"]
    paths = predict_paths(out_dir, s["video_id"])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sources = {"model": model.sha256}
    if source_sha256:
        sources[f"video:{s['video_id']}"] = source_sha256
    prov = provenance.make_provenance("predict", s["options"], sources,
                                      params={"model": s["model"], "options": s["options"]})
    frames, epochs = result["frames"], result["epochs"]
    provenance.write_table(pa.Table.from_pandas(frames, preserve_index=False),
                           paths["frames_parquet"], prov)
    provenance.write_table(pa.Table.from_pandas(epochs, preserve_index=False),
                           paths["epochs_parquet"], prov)
    provenance.write_text(frames.to_csv(index=False, na_rep=""), paths["frames_csv"])
    provenance.write_text(epochs.to_csv(index=False, na_rep=""), paths["epochs_csv"])
    title = (f"{s['video_id']}: {s['n_ok']}/{s['n_frames_processed']} frames with a face; "
             f"{model.info['configuration']['classifier']} on "
             f"{model.info['backbone']['name']}/{model.info['backbone']['layer']}")
    with provenance.atomic_path(paths["timeline_png"]) as tmp:
        plot_timeline(frames, epochs, model.threshold, tmp, title)
    provenance.write_text(timeline_html(paths["timeline_png"].read_bytes(), s, epochs),
                          paths["timeline_html"])
    provenance.write_json({**s, "source_sha256": source_sha256}, paths["summary_json"])
    return paths


# ----------------------------------------------------------------------------
# batches: the CLI and the Snakemake rule
# ----------------------------------------------------------------------------
def read_video_sheet(path: str | os.PathLike, data_root: str | os.PathLike | None = None
                     ) -> dict[str, str]:
    """``video_id -> absolute path`` from a CSV/TSV with columns ``video_id``, ``path``
    (other columns ignored; relative paths against ``data_root`` or the sheet's folder)."""
    from neopain.core.samples import ID_RE, read_sheet

    path = Path(path)
    df = read_sheet(path)
    missing = [c for c in ("video_id", "path") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need video_id, path)")
    root = Path(data_root) if data_root else path.parent
    out: dict[str, str] = {}
    for i, r in df.iterrows():
        vid, p = str(r["video_id"]).strip(), str(r["path"]).strip()
        row = f"{path}: line {df.attrs['lines'][i]} (video_id={vid!r})"
        if not ID_RE.match(vid):
            raise ValueError(f"{row}: video_id must match {ID_RE.pattern}")
        if vid in out:
            raise ValueError(f"{row}: duplicate video_id")
        ap = Path(p) if Path(p).is_absolute() else root / p
        if not ap.exists():
            raise ValueError(f"{row}: path {str(ap)!r} does not exist")
        out[vid] = str(ap.resolve())
    return out


def read_baseline_sheet(path: str | os.PathLike, data_root: str | os.PathLike | None = None
                        ) -> dict[str, str]:
    """``video_id -> absolute baseline path`` from the sheet's optional ``baseline_path``
    column (a baseline recording of the same patient; empty cells: the recording itself)."""
    from neopain.core.samples import read_sheet

    path = Path(path)
    df = read_sheet(path)
    if "baseline_path" not in df.columns:
        return {}
    root = Path(data_root) if data_root else path.parent
    out = {}
    for i, r in df.iterrows():
        b = r["baseline_path"]
        if b is None or (isinstance(b, float) and np.isnan(b)) or not str(b).strip():
            continue
        ap = Path(str(b).strip())
        ap = ap if ap.is_absolute() else root / ap
        if not ap.exists():
            raise ValueError(f"{path}: line {df.attrs['lines'][i]} (video_id="
                             f"{str(r['video_id']).strip()!r}): baseline_path {str(ap)!r} "
                             "does not exist")
        out[str(r["video_id"]).strip()] = str(ap.resolve())
    return out


def predict_baselines(predict_cfg: dict) -> dict[str, str]:
    """The ``predict`` rule's baseline recordings per video (``baseline_path`` column)."""
    if not (predict_cfg.get("model") and predict_cfg.get("videos")):
        return {}
    return read_baseline_sheet(predict_cfg["videos"], predict_cfg.get("data_root"))


def predict_videos(predict_cfg: dict) -> dict[str, str]:
    """The ``predict`` rule's videos: ``{}`` unless both ``model`` and ``videos`` are set."""
    if not (predict_cfg.get("model") and predict_cfg.get("videos")):
        return {}
    return read_video_sheet(predict_cfg["videos"], predict_cfg.get("data_root"))


def _options(d: dict, **over) -> PredictOptions:
    keys = PredictOptions.__dataclass_fields__
    kw = {k: v for k, v in {**d, **over}.items() if k in keys and v is not None}
    return PredictOptions(**kw)


def predict_rule(model_path, video, video_id: str, out_dir, cfg: dict, threads: int = 1,
                 baseline: str | None = None) -> dict:
    """One job of the ``predict`` rule: a video that cannot be read is recorded (status
    ``error``, empty tables) so a batch goes on; the error is logged. ``baseline``: the
    video's baseline recording (sheet column ``baseline_path``; else
    ``predict.baseline_video``; else the recording itself)."""
    from neopain.deploy.export import load
    from neopain.faces.video import source_sha256

    model = load(model_path, cfg.get("sha256"))
    opts = _options(cfg, threads=max(1, int(threads)), baseline_video=baseline)
    if opts.baseline_video and model.video is None:
        log.warning("%s is a frame-level model: the baseline video %s is not used",
                    model_path, opts.baseline_video)
    pred = Predictor(model, opts)
    try:
        try:
            res = pred.predict(video, video_id)
        except VideoError as exc:
            log.error("%s", exc)
            res = _empty_result(pred, video, video_id, str(exc))
        paths = write_outputs(res, out_dir, model, source_sha256(video)
                              if Path(video).exists() else None)
        if pred.opt.annotate and res["summary"]["n_frames_processed"]:
            pred.annotate(video, res, Path(out_dir) / f"{video_id}.annotated.mp4")
    finally:
        pred.close()
    return paths


def _empty_result(pred: Predictor, video, video_id: str, error: str) -> dict:
    frames = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(FRAME_COLUMNS, (
        "object", "int32", "float64", "bool", "object", "float64", "float64", "float64",
        "Int8", "int32", "float64", "float64", "float64", "float64"))})
    epochs = epoch_table(frames, pred.model.threshold, pred.model.labels)
    epochs.insert(0, "video_id", video_id)
    summary = {"video_id": video_id, "path": str(video), "status": "error", "error": error,
               "n_frames_processed": 0, "n_ok": 0, "success_rate": 0.0, "reasons": {},
               "n_epochs": 0, "epochs_with_decision": 0, "epochs_pain": 0,
               "threshold": pred.model.threshold, "labels": list(pred.model.labels),
               "model": {"file": str(pred.model.path), "sha256": pred.model.sha256,
                         "name": pred.model.info.get("name"),
                         "format_version": pred.model.manifest["format_version"]},
               "options": {k: v for k, v in asdict(pred.opt).items() if k != "weights_dir"},
               "device": pred.device.type, "smoother": "", "epoch_rule": "",
               "timing_s": {}, "frames_per_s": float("nan"), "n_scored": 0,
               "pspi_peak": None}
    return {"frames": frames, "epochs": epochs, "summary": summary, "track": None}


def run_cli(model_path: str, videos: list[str], out_dir: str, options: PredictOptions,
            expect_sha256: str | None = None, echo=print) -> int:
    """``neopain predict``: 0 when every video was read, 2 when a video (or the model)
    could not be; the message names the file. Outputs of readable videos are written
    even when another one fails."""
    import sys

    from neopain.features.backbones import WeightsError
    from neopain.deploy.export import load
    from neopain.faces.video import source_sha256

    def err(msg):
        print(f"error: {msg}", file=sys.stderr)

    try:
        model = load(model_path, expect_sha256)
    except ArtefactError as exc:
        err(exc)
        return 2
    names = [Path(v).stem if Path(v).suffix else Path(v).name for v in videos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        err(f"several inputs are named {dup[0]!r}; predict them into different --out folders")
        return 2
    try:
        pred = Predictor(model, options)
    except (PredictionError, WeightsError, ValueError) as exc:
        err(exc)
        return 2
    echo(f"model: {model.summary()}")
    if options.baseline_video and model.video is None:
        echo(f"note: {model_path} is a frame-level model; --baseline-video is not used")
    rc = 0
    try:
        for video, name in zip(videos, names):
            try:
                res = pred.predict(video, name)
            except VideoError as exc:
                err(f"{exc}")
                rc = 2
                continue
            except PredictionError as exc:
                err(exc)
                rc = 2
                continue
            paths = write_outputs(res, out_dir, model, source_sha256(video))
            s = res["summary"]
            if options.annotate and s["n_frames_processed"]:
                a = pred.annotate(video, res, Path(out_dir) / f"{name}.annotated.mp4")
                echo(f"{video}: annotated video (contains faces: PHI) {a}")
            if s["status"] == "error":
                err(f"{s['error']} (the {s['n_frames_processed']} frame(s) decoded before "
                    f"the problem are in {paths['frames_parquet']})")
                rc = 2
            echo(f"{video}: {s['n_ok']}/{s['n_frames_processed']} frames with a face, "
                 f"{s['epochs_pain']}/{s['epochs_with_decision']} decided epochs pain "
                 f"({s['n_epochs']} epochs), {s['frames_per_s']:.1f} frames/s -> "
                 f"{paths['timeline_html']}")
    finally:
        pred.close()
    return rc
