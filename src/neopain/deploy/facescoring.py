"""Track a source and score its faces with an artefact's tracker and backbone.

:class:`FaceScorer` loads the study's tracker and backbone as the artefact pins them
(weights by sha256; embedded weights unpacked to a temporary folder) and runs a source:
the tracker (:func:`neopain.faces.track.track_video`) on the decoded stream, each tracked
face aligned (:func:`neopain.faces.crop.align`), JPEG round-tripped at the study's
quality and run in batches through the backbone (:class:`neopain.features.extract.Runner`),
features cast to the study's feature dtype and scored by the model (frame level) or kept
(video level). Tracking and scoring share ONE decode pass (:mod:`neopain.deploy.stream`)
unless ``single_pass`` is off; an actions model takes its features from the tracker's
face mesh (:mod:`neopain.deploy.actionsmodel`) after tracking.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from neopain.deploy.exported import ExportedModel
from neopain.faces.video import Frame, VideoError, iter_frames

log = logging.getLogger(__name__)


class PredictionError(RuntimeError):
    """The pipeline cannot run with this artefact here (weights, tracker mismatch)."""


@dataclass
class TrackedSource:
    """One source tracked and scored: the track table, its QC record, its columns as lists
    (``tr``), per track row the raw ``score`` (NaN until scored) and whether its features
    are finite, the number of faces scored and the timings."""

    table: pa.Table
    qc: dict
    tr: dict
    score: np.ndarray
    feat_ok: np.ndarray
    n_scored: int
    timing: dict
    features: np.ndarray | None = None    #: kept features per track row (video level)
    statistics_input: np.ndarray | None = None  #: actions statistics: features + pose


def _subsample(frames: Iterable[Frame], every: int) -> Iterator[Frame]:
    for fr in frames:
        if fr.index % every == 0:
            yield fr


class FaceScorer:
    """The tracker and the backbone of an artefact, loaded once: tracks a source and scores
    its tracked faces (``options``: :class:`neopain.deploy.predictor.PredictOptions`)."""

    def __init__(self, model: ExportedModel, options):
        import torch

        from neopain.features.backbones import load_backbone
        from neopain.features.weightfiles import WeightsError
        from neopain.features.extract import Runner, pick_device
        from neopain.faces.detectors.registry import build_detector
        from neopain.faces.trackparams import params_from_config

        self.model = model
        self.opt = options
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
        # an actions statistics table (actions/video, actions/pose): rows made per block
        self.statistics = self.actions and b["layer"] != "frame"
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
    def frames(self, path) -> Iterator[Frame]:
        """The source's decoded frames as the predictor sees them (``every``, ``max_frames``)."""
        src = iter_frames(path, fps_for_images=self.fps_for_images,
                          max_frames=self.opt.max_frames)
        return _subsample(src, int(self.opt.every))

    def track_and_score(self, path: Path, keep_features: bool = False) -> TrackedSource:
        """Track ``path`` and score its tracked faces (video level and ``keep_features``:
        keep every row's features).  One decode pass unless ``single_pass`` is off."""
        from functools import partial

        from neopain.faces.track import track_video

        frames_iter = self.frames(path)        # raises now for a missing path
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
        # the frames' features (video level); actions statistics: features + pose
        F = np.full((n, dim), np.nan, np.float32) if keep else None
        Fs = None
        t1 = time.perf_counter()
        if single:
            for p, (s, fin, f) in got.items():
                score[p], feat_ok[p] = s, fin
                if keep:
                    F[p] = f
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
            if self.actions:
                n_scored, F, Fs = self._score_actions(path, table, score, feat_ok, F)
            else:
                n_scored = self._score_frames(path, tr, score, feat_ok, F)
            timing = {"track": t_track, "features_classify": time.perf_counter() - t1,
                      "single_pass": None}
        return TrackedSource(table, qc, tr, score, feat_ok, n_scored, timing, F, Fs)

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

    def _score_frames(self, path: Path, tr: dict, score: np.ndarray, feat_ok: np.ndarray,
                      F: np.ndarray | None) -> int:
        """Second pass: align, JPEG round trip, backbone, model -- in batches; ``F`` (video
        level) receives the features, scored after the pass."""
        from neopain.faces.crop import align, encode_jpeg
        from neopain.features.extract import decode_batch

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
            feats, s, fin = self._score_batch(batch, scale=F is None)
            idx = np.asarray(where)
            if F is not None:                  # video level: scored after the pass
                F[idx] = feats
            score[idx] = s
            feat_ok[idx] = fin
            done += len(jpegs)
            jpegs.clear()
            where.clear()

        try:
            for fr in self.frames(path):
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

    def _score_actions(self, path: Path, table: pa.Table, score: np.ndarray,
                       feat_ok: np.ndarray, kept: np.ndarray | None):
        """An actions model: its features from the tracked frames' meshes
        (:func:`neopain.deploy.actionsmodel.frame_feature_matrix`), scored like the
        backbone's. ``(n scored, kept features, statistics input)``: video level keeps the
        features (with their pose when pose is regressed out), a statistics table keeps
        features + pose as both."""
        from neopain.deploy.actionsmodel import frame_feature_matrix

        frames = self.frames(path) if self.model.info["backbone"]["cfg"]["actions"].get(
            "texture", True) else None
        try:
            F, P = frame_feature_matrix(table, frames, self.model.info["backbone"],
                                        self.crop_size, self.jpeg_quality)
        except VideoError:   # the tracking pass stopped at the same place
            F, P = frame_feature_matrix(table, None, self.model.info["backbone"],
                                        self.crop_size, self.jpeg_quality)
        ok = np.asarray(table.column("ok").to_pylist(), bool)
        fin = np.isfinite(F).all(axis=1) & ok
        stats = None
        if self.statistics:               # frames with a mesh, for the block statistics
            fin = np.isfinite(P).all(axis=1) & ok
            kept = stats = np.hstack([F, P])
        elif kept is not None:
            if self.video.n_frame_pose:   # pose regressed out: frames carry their pose
                F = np.hstack([F, P])
                kept = np.full(F.shape, np.nan, np.float32)
            kept[fin] = F[fin]
        elif fin.any():
            score[fin] = self.model.score(F[fin])
        feat_ok[:] = fin
        return int(fin.sum()), kept, stats

