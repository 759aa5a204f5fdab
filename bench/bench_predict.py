"""End-to-end frames/s of bedside prediction (`neopain predict`) on a 720p video.

Usage::

    .venv/bin/python bench/bench_predict.py [--model results/export/model.neopain]
        [--video FILE] [--frames 300] [--every 1] [--device cpu|cuda] [--threads 1]

Without ``--model`` an artefact is fitted here on synthetic mobilenet_v2/penultimate
features (naive Bayes on 5 SU-selected features): its scores mean nothing, but every stage
runs as with a real model (tracking, alignment + JPEG, the CNN, selection, classifier,
calibration, timeline, outputs). Without ``--video`` the shared infant video
(../shared/data/videos/infant_000056.mp4, 1280x720) is used; any other video is first
resized to 1280x720 into a temporary file (cv2.VideoWriter, mp4v). Prints the machine,
package versions, and frames/s (decode twice + track + features + classify + outputs;
model loading excluded and reported apart).
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
from neopain.runtime import cpu_model, keep_freed_memory  # noqa: E402


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
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    keep_freed_memory()  # as `neopain predict` does

    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from neopain.export import load
    from neopain.predict import PredictOptions, Predictor, write_outputs

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
        make_artefact(model_path, classifier="nb", preset="paper", k=5, dim=1280,
                      selector="su")
    t0 = time.perf_counter()
    model = load(model_path)
    pred = Predictor(model, PredictOptions(every=args.every, max_frames=args.frames,
                                           device=args.device, precision=args.precision,
                                           batch_size=args.batch_size,
                                           threads=args.threads))
    t_load = time.perf_counter() - t0
    if pred.device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    res = pred.predict(video)
    write_outputs(res, Path(tmp.name) / "out", model)
    if pred.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t1
    s = res["summary"]
    n = s["n_frames_processed"]
    from neopain.provenance import package_versions

    print(f"machine: {platform.node()} {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, device {pred.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if pred.device.type == "cuda" else ""))
    print(f"python {platform.python_version()}; " + ", ".join(
        f"{k} {v}" for k, v in package_versions().items()))
    print(f"input: {video} (1280x720), {n} frames processed (every {args.every}), "
          f"{s['n_ok']} with a face; model {model.summary()}")
    print(f"load (detector + backbone + artefact): {t_load:.2f} s")
    tt = s["timing_s"]
    print(f"track pass {tt['track']:.2f} s ({n / tt['track']:.1f} frames/s); align+JPEG+CNN+"
          f"classify pass {tt['features_classify']:.2f} s "
          f"({s['n_scored'] / max(tt['features_classify'], 1e-9):.1f} faces/s)")
    print(f"END-TO-END: {n} frames in {wall:.2f} s = {n / wall:.1f} frames/s "
          f"(outputs included)")
    pred.close()
    tmp.cleanup()
    return 0 if np.isfinite(n / wall) else 1


if __name__ == "__main__":
    raise SystemExit(main())
