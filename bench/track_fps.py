"""Tracking throughput (frames/s) per backend on 720p video, with machine and versions.

    .venv/bin/python bench/track_fps.py                    # infant_000056.mp4 (1280x720)
    .venv/bin/python bench/track_fps.py --frames 150 --threads 2 --json out.json

Frames/s = frames tracked / wall time of ``track_video`` INCLUDING streamed decode
(PyAV), with the settings of config.yaml's ``track`` section unless a row says
otherwise (``max_side``, ``search_every``, ROI tracking ...). Each backend runs
once after a warm-up of 10 frames, with ``--threads`` (default 1, as the track rule)
intra-op threads for torch and onnxruntime.  Not a test: numbers depend on the machine.
Backends whose models / environment are absent are listed as skipped, with why.
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
from neopain.runtime import cpu_model  # noqa: E402


def _v(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


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
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    from neopain.track import build_detector, params_from_config, track_video
    from neopain.video import iter_frames

    cfg0 = yaml.safe_load((REPO / "config.yaml").read_text())["track"]
    cuda = torch.cuda.is_available()
    m = Path(args.models)
    rows = {
        "mtcnn (default)": {},
        "mtcnn max_side=320": {"max_side": 320},
        "mtcnn + facemesh": {"landmarks": "facemesh",
                             "facemesh": {"model_dir": str(m / "facemesh")}},
        "insightface scrfd_500m_bnkps": {"detector": "insightface", "insightface": {
            "model_dir": str(m / "insightface_scrfd"), "det_model": "scrfd_500m_bnkps.onnx"}},
        "insightface scrfd_2.5g": {"detector": "insightface", "insightface": {
            "model_dir": str(m / "insightface_scrfd"), "det_model": "scrfd_2.5g.onnx",
            "det_size": 480}},
        "mediapipe 0.10.21 (worker)": {"detector": "mediapipe"},
    }
    if cuda:
        rows["mtcnn GPU full_every=1 batch_size=16"] = {"full_every": 1, "batch_size": 16,
                                                        "device": "cuda"}
        rows["mtcnn GPU full frames only (roi off) batch_size=16"] = {
            "full_every": 1, "batch_size": 16, "roi": False, "device": "cuda"}
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
          f"{_v('facenet-pytorch')}, onnxruntime {_v('onnxruntime')}, opencv "
          f"{_v('opencv-python-headless')}, av {_v('av')}, numpy {_v('numpy')}")
    print(f"input: {args.video} ({w}x{h}), {n_dec} frames; decode only: {decode_fps:.1f} fps")
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
        if hasattr(det, "close"):
            det.close()
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cpu": cpu_model(), "cpus": os.cpu_count(), "threads": args.threads,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "decode_fps": decode_fps,
            "video": args.video, "size": [w, h], "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
