"""Speed of the actions stage per frame on one core: mesh (LiteRT and ONNX) + descriptors.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_actions.py [--video PATH] [--frames 150]

Faces are found once with MTCNN (not timed: the tracker does that anyway); then, per frame,
timed separately: the 468-point mesh on the upright 192x192 crop (``FaceMeshRefiner.refine``:
warp + network + mapping back), the canonical pose and NFCS/AU descriptors
(``actions.frame_actions``), the aligned crop's wrinkle texture (``actions.texture_energy``,
JPEG decode included as the stage does).  Prints machine, versions, medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", type=Path,
                    default=ROOT.parent / "shared" / "data" / "videos" / "infant_000056.mp4")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--onnx", type=Path, default=ROOT.parent / "shared" / "models" / "facemesh")
    a = ap.parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(1)
    from neopain.features import actions as A
    from neopain.faces.crop import align, encode_jpeg, transform_points
    from neopain.faces.detectors.facemesh import FaceMeshRefiner
    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.track import track_video

    det, _ = build_detector({"detector": "mtcnn", "landmarks": "detector"})
    table, qc = track_video(a.video, det, max_frames=a.frames)
    from neopain.faces.video import iter_frames
    frames = {f.index: f.image for f in iter_frames(a.video, max_frames=a.frames)}
    rows = [r for r in table.to_pylist() if r["ok"]]
    from neopain.faces.detectors.detection import Detection
    dets = [(frames[r["frame"]], Detection(box=(r["x1"], r["y1"], r["x2"], r["y2"]),
                                           score=r["score"],
                                           landmarks=np.reshape(r["landmarks"], (5, 2))))
            for r in rows]
    meshes = {"litert": FaceMeshRefiner(model_dir=ROOT / "resources" / "weights",
                                        backend="litert", replace_five=False, threads=1)}
    if (a.onnx / "FaceMesh.onnx").is_file():
        meshes["onnx"] = FaceMeshRefiner(model_dir=a.onnx, backend="onnx", replace_five=False,
                                         threads=1)
    import ai_edge_litert
    import onnxruntime
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cpus "
          f"(1 thread used), python {platform.python_version()}, ai-edge-litert "
          f"{getattr(ai_edge_litert, '__version__', '?')}, onnxruntime {onnxruntime.__version__}, "
          f"opencv {cv2.__version__}, numpy {np.__version__}")
    print(f"{a.video.name}: {len(dets)} tracked frames of {qc['n_frames']}")
    res = {}
    for name, ref in meshes.items():
        ref.refine(*dets[0])  # warm-up
        t = []
        for img, d in dets:
            t0 = time.perf_counter()
            out = ref.refine(img, d)
            t.append(time.perf_counter() - t0)
        res[f"mesh_{name}"] = np.median(t) * 1e3
        if name == "litert":
            refined = [(img, ref.refine(img, d)) for img, d in dets]
    td, tt = [], []
    for img, m in refined:
        t0 = time.perf_counter()
        A.frame_actions(m.dense, m.depth)
        td.append(time.perf_counter() - t0)
        crop, M = align(img, m.landmarks, 224)
        jpeg = encode_jpeg(crop)
        t0 = time.perf_counter()
        grey = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        A.texture_energy(grey, transform_points(M, m.dense))
        tt.append(time.perf_counter() - t0)
    res["descriptors"] = np.median(td) * 1e3
    res["texture"] = np.median(tt) * 1e3
    total = res["mesh_litert"] + res["descriptors"] + res["texture"]
    for k, v in res.items():
        print(f"  {k:<14} {v:7.2f} ms/frame (median)")
    print(f"  actions total (LiteRT mesh + descriptors + texture): {total:.2f} ms/frame, "
          f"{1e3 / total:.0f} frames/s on one core")
    if "mesh_onnx" in res:
        print(f"  ratio LiteRT / ONNX mesh: {res['mesh_litert'] / res['mesh_onnx']:.2f}")
    print(f"  issue target: mesh <= ~5 ms/frame: {'met' if res['mesh_litert'] <= 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
