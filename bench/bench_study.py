"""Study-scale benchmark: an N-clip study through the DAG vs the same work in one process.

    .venv/bin/python bench/bench_study.py [--clips 200] [--seconds 4] [--shards 16]
                                          [--backbones mobilenet_v2] [--cores 2]

Builds, in a temporary folder, N short clips: 4-s cuts (318x238, 24 fps, MPEG-4) of the
shared face videos (../shared/data/videos: every start offset a clip apart, plain and
mirrored) plus CK+ frame folders (../shared/data/ckplus_sequences, read in place, up to
one in five clips), a sample sheet of 20 subjects with both labels, and the tiny CI
configuration (tests/_tiny.py: one selector, k = 5, Naive Bayes) with 5-fold
subject-grouped CV and ``shards.count`` shards. Then, one after the other:

1. the whole DAG from an empty ``results/`` with the local executor (``--cores``);
2. the same per-video work in one process calling the library: track + crop +
   keyframes (one decode pass, as the shard job), the features of every backbone,
   the strain signal and the QC montage, for every clip (torch on ``--cores`` threads);
3. one more clip added to the sheet: the incremental run. Its shard jobs restore the
   shard's other videos from the per-video cache (``shards.cache``, docs/scale.md) and
   compute the new clip; the line after it says how many were restored and computed, and
   the seconds of each job (the aggregations rerun whole).

Prints machine, versions, the wall times, the jobs of each run and two ratios: DAG wall
/ one process (target <= 1.25; the DAG also runs the aggregations: gather, split,
select, classify, evaluate, nested search, report, while it runs ``--cores`` jobs side by
side and the one process mostly on one core) and incremental / full (target <= 5%).
Shared data absent: exits 2 saying so.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
SHARED = (REPO / ".." / "shared" / "data").resolve()
SOURCES = ["WolfgangLanger_Pexels.mp4", "short_hamilton_clip.mp4", "infant_000056.mp4",
           "face_noface.mov", "noface_face.mov", "single_face.mp4"]
SIZE, FPS = (318, 238), 24.0


def _frames(path: Path):
    import av
    import cv2

    with av.open(str(path)) as box:
        for fr in box.decode(video=0):
            yield cv2.resize(fr.to_ndarray(format="bgr24"), SIZE, interpolation=cv2.INTER_AREA)


def make_clips(out: Path, n: int, seconds: float) -> list[Path]:
    """n clips of ``seconds`` cut from the shared videos (offsets a clip apart, then
    mirrored, then shifted by half a clip), 318x238 at 24 fps."""
    import cv2

    per = int(round(seconds * FPS))
    out.mkdir(parents=True, exist_ok=True)
    decoded = {name: list(_frames(SHARED / "videos" / name)) for name in SOURCES}
    starts = []
    for flip in (False, True):
        for shift in (0, per // 2, per // 4, 3 * per // 4):
            for name, frames in decoded.items():
                for s in range(shift, len(frames) - per + 1, per):
                    starts.append((name, s, flip))
    clips = []
    for i in range(n):
        name, s, flip = starts[i % len(starts)]
        path = out / f"clip{i:04d}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
        for img in decoded[name][s:s + per]:
            writer.write(cv2.flip(img, 1) if flip else img)
        writer.release()
        if not path.is_file() or path.stat().st_size == 0:
            sys.exit(f"could not write {path} (OpenCV mp4v writer)")
        clips.append(path)
    return clips


def make_study(root: Path, n_clips: int, seconds: float, shards: int, backbones: list[str],
               extra: int = 1) -> tuple[Path, Path]:
    """(config, grown sheet): ``n_clips`` in samples.tsv, ``extra`` more in grown.tsv."""
    import _tiny

    n_ck = min(n_clips // 5, 40)
    ck = sorted((SHARED / "ckplus_sequences").glob("*/S*"))[:n_ck]
    clips = make_clips(root / "clips", n_clips - n_ck + extra, seconds)
    rows = [(c.stem, str(c)) for c in clips] + [(p.name, str(p)) for p in ck]
    rows = rows[:n_clips - n_ck] + rows[len(clips):] + rows[n_clips - n_ck:len(clips)]

    def sheet(rs):
        return [(vid, f"sub{i % 20:02d}", path, "pain" if (i + i // 20) % 2 else "no_pain")
                for i, (vid, path) in enumerate(rs)]

    _tiny.tiny_config(root, SHARED, videos=sheet(rows[:n_clips]))
    _tiny.write_sheet(root / "grown.tsv", sheet(rows))
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["data_root"] = str(root)
    cfg["shards"] = {**cfg.get("shards", {}), "count": shards}
    cfg["protocols"] = {"kfold": {"kind": "group_kfold", "n_splits": 5}}
    layers = {"mobilenet_v2": ["penultimate"], "fer": ["penultimate"]}
    cfg["extract"]["backbones"] = {b: {"layers": layers.get(b, ["penultimate"])}
                                   for b in backbones}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "config.yaml", root / "grown.tsv"


def run_dag(root: Path, cores: int, *extra: str) -> tuple[float, dict]:
    from _tiny import job_counts

    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(root), "--configfile", str(root / "config.yaml"),
           "--cores", str(cores), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return wall, job_counts(proc.stdout + proc.stderr, by_shard=True)


def job_times(root: Path, since: float) -> dict[str, float]:
    """Rule -> wall seconds of each job that started after ``since`` (Snakemake's
    metadata records every output's job start and end)."""
    import json

    jobs = {}
    for f in (root / ".snakemake" / "metadata").iterdir():
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if m.get("starttime") and m["starttime"] >= since:
            jobs[m["rule"]] = m["endtime"] - m["starttime"]
    return jobs


def cache_counts(root: Path, since: float) -> tuple[int, int]:
    """(videos restored, videos computed) by the shard jobs that ran after ``since``,
    from the last line of their logs."""
    import re

    restored = computed = 0
    for log in [*(root / "logs" / "shards").glob("*.log"),
                *(root / "logs" / "extract").glob("*/_shard_*.log")]:
        if log.stat().st_mtime < since:
            continue
        found = re.findall(r"(\d+) video\(s\) restored, (\d+) computed", log.read_text())
        if found:
            restored += int(found[-1][0])
            computed += int(found[-1][1])
    return restored, computed


def one_process(root: Path, cores: int) -> tuple[float, int]:
    """The per-video work of the whole study in this process: (seconds, videos)."""
    import pyarrow.parquet as pq  # noqa: F401
    import torch

    from neopain.features.backbones import load_backbone
    from neopain.features.extract import extract_video, pick_device
    from neopain.faces.framepass import track_crop_keyframes
    from neopain.faces.qc import montage
    from neopain.core.samples import load_samples
    from neopain.features.strain import strain_signal
    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.trackparams import params_from_config

    cfg = yaml.safe_load((root / "config.yaml").read_text())
    samples = load_samples(str(root / "samples.tsv"), cfg["labels"], cfg["data_root"],
                           check_paths=True)
    torch.set_num_threads(cores)
    t0 = time.perf_counter()
    detector, refiner = build_detector(cfg["track"])
    params = params_from_config(cfg["track"])
    nets = {b: load_backbone(b, spec["layers"], cfg["extract"]["weights_dir"])[0]
            for b, spec in cfg["extract"]["backbones"].items()}
    device = pick_device("cpu")
    strain = {k: v for k, v in cfg["strain"].items() if k not in ("enabled", "peaks")}
    for vid, path in zip(samples.index, samples["abspath"]):
        track, qc, crops, kf = track_crop_keyframes(
            path, detector, refiner, track_params=params, crop_cfg=cfg["crop"],
            keyframes_cfg=cfg["keyframes"], fps_for_images=cfg["fps_for_images"])
        for net in nets.values():
            extract_video(net, vid, crops, kf, batch_size=32, device=device, precision="auto",
                          workers=cfg["extract"]["workers"])
        strain_signal(crops, flow=strain.get("flow"), smooth=strain.get("smooth", 4.0))
        montage(crops, track, qc, show_faces=False)
    return time.perf_counter() - t0, len(samples)


def versions() -> str:
    from importlib.metadata import version

    from neopain.core.runtime import cpu_model

    pk = ", ".join(f"{p} {version(p)}" for p in ("snakemake", "torch", "opencv-python-headless",
                                                  "av", "numpy") if _has(p))
    return (f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}\n"
            f"python {platform.python_version()}; {pk}")


def _has(pkg: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(pkg)
        return True
    except PackageNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--backbones", nargs="+", default=["mobilenet_v2"])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="build the study in this folder and keep it")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)   # progress shows in a redirected log
    if not (SHARED / "videos").is_dir():
        print(f"shared data absent ({SHARED}): nothing to benchmark", file=sys.stderr)
        return 2
    print(versions())
    with tempfile.TemporaryDirectory(prefix="neopain-study-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        make_study(root, args.clips, args.seconds, args.shards, args.backbones)
        print(f"study: {args.clips} clips ({args.seconds:g} s, 318x238, 24 fps; "
              f"CK+ frame folders among them), {args.shards} shards, backbones "
              f"{args.backbones}, {args.cores} cores")
        full, jobs = run_dag(root, args.cores)
        n_jobs = sum(jobs.values())
        per_video = sum(v for k, v in jobs.items() if "_s" in k and k.rsplit("_", 1)[1][1:].isdigit())
        print(f"DAG, empty results/: {full:.1f} s wall, {n_jobs} jobs "
              f"({per_video} shard jobs for the per-video work)")
        one, n = one_process(root, args.cores)
        print(f"one process, same per-video work (track+crop+keyframes, features, strain, "
              f"montage) for {n} videos: {one:.1f} s ({one / n:.2f} s per video)")
        since = time.time()
        inc, inc_jobs = run_dag(root, args.cores, "--config", f"samples={root / 'grown.tsv'}")
        print(f"adding one clip: {inc:.1f} s wall, {sum(inc_jobs.values())} jobs: {inc_jobs}")
        restored, computed = cache_counts(root, since)
        times = job_times(root, since)
        shard = {r: t for r, t in times.items() if r.rsplit("_", 1)[-1][1:].isdigit()}
        print(f"  the new clip's shard: {computed} video-stage(s) computed, {restored} restored "
              f"from shards.cache; shard jobs {sum(shard.values()):.1f} s of job time, "
              f"aggregations {sum(times.values()) - sum(shard.values()):.1f} s")
        print("  job seconds: " + ", ".join(f"{r} {t:.1f}" for r, t in
                                            sorted(times.items(), key=lambda x: -x[1])))
        print(f"ratio DAG / one process: {full / one:.2f} (target <= 1.25)")
        print(f"ratio incremental / full: {100 * inc / full:.1f}% (target <= 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
