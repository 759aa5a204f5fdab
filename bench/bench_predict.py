"""End-to-end frames/s of bedside prediction (`neopain predict`) on a 720p video.

Usage::

    .venv/bin/python bench/bench_predict.py [--model results/export/model.neopain]
        [--video FILE] [--frames 300] [--every 1] [--device cpu|cuda] [--threads 1]

Without ``--model`` an artefact is fitted here on synthetic mobilenet_v2/penultimate
features (naive Bayes on 5 SU-selected features) with config.yaml's tracker (the default,
BlazeFace + mesh; ``--tracker mtcnn`` for the former one): its scores mean nothing, but
every stage runs as with a real model (tracking, alignment + JPEG, the CNN, selection,
classifier, calibration, timeline, outputs). Without ``--video`` the shared infant video
(../shared/data/videos/infant_000056.mp4, 1280x720) is used; any other video is first
resized to 1280x720 into a temporary file (cv2.VideoWriter, mp4v).

Runs the video twice in one process, same model and machine: BEFORE = two decode passes
(track, then decode again to align + JPEG + CNN + classify: ``single_pass: false``), AFTER
= one decode pass, scoring on a second thread while tracking (``neopain.deploy.stream``). Every
tracked frame is scored in both (the timeline is at the camera's rate, no frame skipped).
Prints the machine, package versions, frames/s end to end of each (outputs included;
model loading excluded and reported apart), their ratio, and whether both gave the same
probabilities.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
from neopain.core.runtime import cpu_model, keep_freed_memory  # noqa: E402


def make_720p(src: Path, dst: Path, max_frames: int) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1280, 720))
    n = 0
    while n < max_frames:
        ok, img = cap.read()
        if not ok:
            break
        out.write(cv2.resize(img, (1280, 720), interpolation=cv2.INTER_LINEAR))
        n += 1
    out.release()
    cap.release()
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--video", type=Path)
    ap.add_argument("--frames", type=int, default=300, help="frames to decode (max)")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    ap.add_argument("--tracker", default=None,
                    help="synthetic artefact's track.detector (default: config.yaml's)")
    ap.add_argument("--only", choices=["before", "after"], help="run one of the two")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    keep_freed_memory()  # as `neopain predict` does

    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from neopain.deploy.exported import load
    from neopain.deploy.outputs import write_outputs
    from neopain.deploy.predictor import PredictOptions, Predictor

    tmp = tempfile.TemporaryDirectory(prefix="bench_predict_")
    video = args.video or REPO.parent / "shared/data/videos/infant_000056.mp4"
    if not video.is_file():
        print(f"no input video: {video} (give --video)")
        return 2
    cap = cv2.VideoCapture(str(video))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    if size != (1280, 720):
        video = make_720p(video, Path(tmp.name) / "input_720p.mp4", args.frames)
        print(f"resized {args.video} {size} -> {video} (1280x720)")
    if args.model:
        model_path = Path(args.model)
    else:
        from _synthetic_model import make_artefact

        model_path = Path(tmp.name) / "synthetic.neopain"
        # SU: numba's OpenMP layer (ReliefF) would change torch's threads in this process
        import yaml

        track = yaml.safe_load((REPO / "config.yaml").read_text())["track"]
        if args.tracker:
            track["detector"] = args.tracker
        make_artefact(model_path, classifier="nb", preset="paper", k=5, dim=1280,
                      selector="su", track=track)
    t0 = time.perf_counter()
    model = load(model_path)
    pred = Predictor(model, PredictOptions(every=args.every, max_frames=args.frames,
                                           device=args.device, precision=args.precision,
                                           batch_size=args.batch_size,
                                           threads=args.threads))
    t_load = time.perf_counter() - t0
    runs = {}
    for label, single in (("before", False), ("after", True)):
        if args.only and args.only != label:
            continue
        pred.opt.single_pass = single
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        res = pred.predict(video)
        write_outputs(res, Path(tmp.name) / label, model)
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        runs[label] = (res, time.perf_counter() - t1)
    res, wall = runs.get("after", runs.get("before"))
    s = res["summary"]
    n = s["n_frames_processed"]
    from neopain.core.provenance import package_versions

    print(f"machine: {platform.node()} {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, device {pred.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if pred.device.type == "cuda" else ""))
    print(f"python {platform.python_version()}; " + ", ".join(
        f"{k} {v}" for k, v in package_versions().items()))
    print(f"input: {video} (1280x720), {n} frames processed (every {args.every}), "
          f"{s['n_ok']} with a face, {s['n_scored']} scored; model {model.summary()}; "
          f"tracker {pred.faces.detector.name}"
          + (" + facemesh" if pred.faces.refiner is not None else ""))
    print(f"load (detector + backbone + artefact): {t_load:.2f} s")
    fps = {}
    for label, (r, w) in runs.items():
        rs = r["summary"]
        fps[label] = rs["n_frames_processed"] / w
        tt = rs["timing_s"]
        if label == "before":
            print(f"BEFORE (two decode passes): track pass {tt['track']:.2f} s, align+JPEG+CNN+"
                  f"classify pass {tt['features_classify']:.2f} s; END-TO-END "
                  f"{rs['n_frames_processed']} frames in {w:.2f} s = {fps[label]:.1f} frames/s")
        else:
            sp = rs["single_pass"]
            print(f"AFTER  (one decode pass, scoring thread): END-TO-END "
                  f"{rs['n_frames_processed']} frames in {w:.2f} s = {fps[label]:.1f} frames/s "
                  f"(every tracked frame scored; {sp['batches_scored_by_tracking_thread']} "
                  f"batches scored by the tracking thread, {sp['max_buffered_frames']} frames "
                  f"buffered at most, landmarks within {sp['landmark_max_dev_px']:.2g} px of "
                  "the track table)")
    if len(runs) == 2:
        pa_, pb = (runs[k][0]["frames"]["probability"].to_numpy() for k in ("before", "after"))
        same = np.allclose(pa_, pb, atol=1e-3, equal_nan=True)
        print(f"ratio after/before: {fps['after'] / fps['before']:.2f}; same probabilities "
              f"(|diff| <= 1e-3): {same} (max |diff| {np.nanmax(np.abs(pa_ - pb)):.2g})")
    print(f"real time (>= 30 frames/s, 720p): {'yes' if n / wall >= 30 else 'NO'} "
          f"({n / wall:.1f} frames/s)")
    pred.close()
    tmp.cleanup()
    return 0 if np.isfinite(n / wall) else 1


if __name__ == "__main__":
    raise SystemExit(main())
