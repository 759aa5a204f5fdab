"""Batches of videos through one artefact: the ``neopain predict`` command and the
``predict`` rule's job.

A video that cannot be read never stops the others: the command reports it (exit
status 2, the message names the file) and goes on; the rule records it (status
``error``, empty tables) so the workflow goes on.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from neopain.deploy.artefact import ArtefactError
from neopain.deploy.facescoring import PredictionError
from neopain.deploy.outputs import write_outputs
from neopain.deploy.predictor import PredictOptions, Predictor
from neopain.deploy.timeline import FRAME_COLUMNS, epoch_table
from neopain.faces.video import VideoError

log = logging.getLogger(__name__)


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
    from neopain.deploy.exported import load
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

    from neopain.features.weightfiles import WeightsError
    from neopain.deploy.exported import load
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
