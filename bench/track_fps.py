"""Tracking throughput (frames/s) per backend on 720p video, with machine and versions.

    .venv/bin/python bench/track_fps.py                    # infant_000056.mp4 (1280x720)
    .venv/bin/python bench/track_fps.py --frames 150 --threads 2 --json out.json

Frames/s = frames tracked / wall time of ``track_video`` INCLUDING streamed decode
(PyAV), with the settings of config.yaml's ``track`` section (default backend
``blazeface`` + the 468-point mesh) unless a row says otherwise (``detector``,
``max_side``, ``landmarks`` ...). Each backend runs once after a warm-up of 10 frames,
with ``--threads`` (default 1, as the track rule) intra-op threads for torch,
onnxruntime and LiteRT.  The default row is then profiled (per-frame milliseconds of
decode, downscale + cut thumbnail, ROI warp, detector, mesh, smoothing) and, with
``--rotations``, also run on the video turned by 90/180/270 degrees (decoded again for
each angle, rotated in memory).  Not a test: numbers depend on the machine.  Backends
whose models / environment are absent are listed as skipped, with why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SHARED = REPO.parent / "shared"
from neopain.core.runtime import cpu_model  # noqa: E402


def _v(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


TAIL: list[str] = []  # printed after the table


def profile(video, det, ref, params, frames: int) -> dict:
    """Per-frame milliseconds of each step of the default tracker (wrapped timers)."""
    import collections
    import functools

    import neopain.faces.track as T
    from neopain.faces.geometry import Views
    from neopain.faces.track import track_video
    from neopain.faces.video import iter_frames

    acc: dict[str, float] = collections.defaultdict(float)
    undo = []

    def wrap(obj, name, key):
        f = getattr(obj, name)

        @functools.wraps(f)
        def g(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                acc[key] += time.perf_counter() - t
        setattr(obj, name, g)
        undo.append((obj, name, f))

    def decode(*a, **k):
        it = iter_frames(*a, **k)
        while True:
            t = time.perf_counter()
            try:
                fr = next(it)
            except StopIteration:
                return
            finally:
                acc["decode (PyAV, rgb24)"] += time.perf_counter() - t
            yield fr

    wrap(Views, "thumb", "downscale to max_side + cut thumbnail")
    wrap(Views, "roi", "ROI warp")
    for meth, key in (("detect_roi", "detector, ROI view"), ("detect", "detector, full view")):
        if hasattr(det, meth):
            wrap(det, meth, key)
    if ref is not None:
        wrap(ref, "refine", "face mesh (crop warp + network)")
    wrap(T, "smooth_rows", "One-Euro smoothing")
    wrap(T, "rows_to_table", "Arrow table")
    t = time.perf_counter()
    _, qc = track_video(video, det, refiner=ref, params=params,
                        frames=decode(video, max_frames=frames))
    total = time.perf_counter() - t
    for obj, name, f in reversed(undo):
        setattr(obj, name, f)
    n = qc["n_frames"]
    out = {k: 1000 * v / n for k, v in acc.items()}
    out["total"] = 1000 * total / n
    TAIL.extend(["", f"profile of the default row ({n} frames, {n / total:.1f} frames/s, "
                 "timers on): ms per frame"] + [f"  {k:40s} {v:6.2f}" for k, v in out.items()])
    return out


def rotations(video, det, ref, params, frames: int) -> dict:
    import cv2
    import numpy as np

    from neopain.faces.track import track_video
    from neopain.faces.video import Frame, iter_frames

    rot = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
           270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    out = {}
    TAIL.extend(["", "default row on rotated copies:", "",
                 "| rotation | ok | success | frames/s (decode + rotate + track) |",
                 "|---|---|---|---|"])
    for a in (0, 90, 180, 270):
        src = (Frame(f.index, f.timestamp, f.image if a == 0 else
                     np.ascontiguousarray(cv2.rotate(f.image, rot[a])))
               for f in iter_frames(video, max_frames=frames))
        t = time.perf_counter()
        _, qc = track_video(video, det, refiner=ref, params=params, frames=src)
        dt = time.perf_counter() - t
        out[a] = {"n_ok": qc["n_ok"], "n_frames": qc["n_frames"], "fps": qc["n_frames"] / dt}
        TAIL.append(f"| {a} | {qc['n_ok']}/{qc['n_frames']} | {qc['success_rate']:.1%} | "
                    f"{qc['n_frames'] / dt:.1f} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(SHARED / "data/videos/infant_000056.mp4"))
    ap.add_argument("--models", default=str(SHARED / "models"))
    ap.add_argument("--frames", type=int, default=300)
    # default 1 thread: what the track rule gets (threads: 1); on a shared 2-core machine
    # torch with 2 OpenMP threads slows MTCNN down many times over when the other
    # core is busy (measured: 18-23 fps quiet, 1.4-2 fps with a loaded neighbour)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0) or 1))
    ap.add_argument("--only", nargs="*", help="run only these rows (names as printed)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--rotations", action="store_true",
                    help="also track the default row on rotated copies (90/180/270)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.trackparams import params_from_config
    from neopain.faces.track import track_video
    from neopain.faces.video import iter_frames

    cfg0 = yaml.safe_load((REPO / "config.yaml").read_text())["track"]
    cuda = torch.cuda.is_available()
    m = Path(args.models)
    rows = {
        "blazeface + facemesh (default)": {},
        "blazeface, no mesh": {"landmarks": "detector"},
        "mtcnn + facemesh": {"detector": "mtcnn"},
        "mtcnn max_side=320": {"detector": "mtcnn", "max_side": 320},
        "mtcnn + facemesh (onnx)": {"detector": "mtcnn", "landmarks": "facemesh",
                                    "facemesh": {"model_dir": str(m / "facemesh")}},
        "insightface scrfd_500m_bnkps": {"detector": "insightface", "insightface": {
            "model_dir": str(m / "insightface_scrfd"), "det_model": "scrfd_500m_bnkps.onnx"}},
        "insightface scrfd_2.5g": {"detector": "insightface", "insightface": {
            "model_dir": str(m / "insightface_scrfd"), "det_model": "scrfd_2.5g.onnx",
            "det_size": 480}},
        "mediapipe 0.10.21 (worker)": {"detector": "mediapipe"},
    }
    if cuda:
        rows["mtcnn GPU full_every=1 batch_size=16"] = {
            "detector": "mtcnn", "full_every": 1, "batch_size": 16, "device": "cuda"}
        rows["mtcnn GPU full frames only (roi off) batch_size=16"] = {
            "detector": "mtcnn", "full_every": 1, "batch_size": 16, "roi": False,
            "device": "cuda"}
    if args.only:
        rows = {k: v for k, v in rows.items() if k in args.only}

    w = h = None
    t0 = time.perf_counter()
    n_dec = 0
    for fr in iter_frames(args.video, max_frames=args.frames):
        h, w = fr.image.shape[:2]
        n_dec += 1
    decode_fps = n_dec / (time.perf_counter() - t0)

    print("# neopain tracking benchmark")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs "
          f"({len(os.sched_getaffinity(0))} usable), {args.threads} threads; "
          f"GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, facenet-pytorch "
          f"{_v('facenet-pytorch')}, onnxruntime {_v('onnxruntime')}, ai-edge-litert "
          f"{_v('ai-edge-litert')}, opencv {_v('opencv-python-headless')}, av {_v('av')}, "
          f"numpy {_v('numpy')}")
    print(f"input: {args.video} ({w}x{h}), {n_dec} frames; decode only: {decode_fps:.1f} fps "
          "(PyAV, its own frame threads)")
    base = {k: v for k, v in cfg0.items()}
    print("settings (config.yaml track): " + ", ".join(
        f"{k}={base.get(k)}" for k in ("max_side", "search_every", "roi", "roi_size",
                                        "roi_scale", "full_every", "batch_size", "smooth")))
    print()
    print("| backend | frames/s | ok | detector calls (search/roi/full) | device | note |")
    print("|---|---|---|---|---|---|")
    results = []
    for name, over in rows.items():
        cfg = {**base, **over}
        try:
            det, ref = build_detector(cfg)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"| {name} | skipped | | | | {str(exc)[:140]} |")
            results.append({"backend": name, "skipped": str(exc)})
            continue
        params = params_from_config(cfg)
        track_video(args.video, det, refiner=ref, params=params, max_frames=10)  # warm-up
        t = time.perf_counter()
        _, qc = track_video(args.video, det, refiner=ref, params=params, max_frames=args.frames)
        dt = time.perf_counter() - t
        fps = qc["n_frames"] / dt
        calls = qc["detector_calls"]
        info = qc["detector"]
        print(f"| {name} | {fps:.1f} | {qc['n_ok']}/{qc['n_frames']} | {calls['search']}/"
              f"{calls['roi']}/{calls['full']} | {info.get('device')} | "
              f"{', '.join(f'{k}={v}' for k, v in over.items() if not isinstance(v, dict))} |")
        results.append({"backend": name, "fps": fps, "n_ok": qc["n_ok"],
                        "n_frames": qc["n_frames"], "calls": calls, "device": info.get("device"),
                        "weights": info.get("weights"), "settings": over})
        if name.endswith("(default)"):
            prof = profile(args.video, det, ref, params, args.frames)
            results[-1]["profile_ms"] = prof
            if args.rotations:
                results[-1]["rotations"] = rotations(args.video, det, ref, params, args.frames)
        if hasattr(det, "close"):
            det.close()
    print("\n".join(TAIL))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpu": cpu_model(), "cpus": os.cpu_count(), "threads": args.threads,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "decode_fps": decode_fps,
            "video": args.video, "size": [w, h], "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
