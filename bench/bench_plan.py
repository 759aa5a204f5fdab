"""Planning-time benchmark: `snakemake -n` on a synthetic study of 1,000 (or 10,000) videos.

    .venv/bin/python bench/bench_plan.py [--videos 1000] [--backbones 4] [--layers 4] [--shards N]

Creates, in a temporary folder, 1,000 placeholder video files (planning only checks that
sample paths exist; nothing is decoded), a sample sheet of 500 subjects x 2 videos and a
config with 4 backbones x 4 layers (registry names and their layers; the weights are not
loaded when planning), one protocol and two selectors, then times a dry run of the whole
DAG (DAG construction + job listing) and prints the number of jobs and the time.
Target: < 60 s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

FALLBACK_LAYERS = ["penultimate", "conv_last", "conv_last_pre", "block_last"]
PREFERRED = ["mobilenet_v2", "vgg16", "resnet50", "alexnet", "vgg_face", "vgg_f"]


def pick_backbones(n_backbones: int, n_layers: int) -> dict:
    """n registry backbones with n of their layer names (mobilenet_v2's names as fallback)."""
    try:
        from neopain.features import registry as bb

        names = [b for b in PREFERRED if b in bb.REGISTRY]
        names += [b for b in sorted(bb.REGISTRY) if b not in names]
        # backbones with at least n_layers known layers first (resnet50 has 3)
        names.sort(key=lambda b: len(getattr(bb.REGISTRY[b], "taps", ()) or ()) < n_layers)
    except Exception:  # noqa: BLE001 - the registry is optional for planning
        bb, names = None, ["mobilenet_v2"]
    out = {}
    for i in range(n_backbones):
        name = names[i] if i < len(names) else f"{names[0]}_{i}"
        layers = []
        spec = bb.REGISTRY.get(name) if bb is not None else None
        for attr in ("taps", "layers", "layer_names"):
            val = getattr(spec, attr, None) if spec is not None else None
            if val:
                layers = [str(x) for x in (val.keys() if isinstance(val, dict) else val)]
                break
        layers = (layers + [x for x in FALLBACK_LAYERS if x not in layers])[:n_layers]
        out[name] = {"layers": layers}
    return out


def make_study(root: Path, n_videos: int, n_backbones: int, n_layers: int,
               shards: int | None = None) -> Path:
    data = root / "videos"
    data.mkdir(parents=True)
    rows = ["video_id\tsubject_id\tpath\tlabel"]
    for i in range(n_videos):
        (data / f"v{i:04d}.mp4").write_bytes(b"")
        label = "pain" if i % 2 else "no_pain"
        rows.append(f"v{i:04d}\ts{i // 2:03d}\tv{i:04d}.mp4\t{label}")
    (root / "samples.tsv").write_text("\n".join(rows) + "\n")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["samples"] = str(root / "samples.tsv")
    cfg["data_root"] = str(data)
    cfg["extract"]["backbones"] = pick_backbones(n_backbones, n_layers)
    cfg["protocols"] = {"group_kfold": {"kind": "group_kfold", "n_splits": 5}}
    if shards:
        cfg["shards"] = {**(cfg.get("shards") or {}), "count": shards}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--backbones", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--shards", type=int, default=None,
                    help="shards.count (default: config.yaml's; docs/scale.md: ~videos/40)")
    ap.add_argument("--limit", type=float, default=60.0, help="target seconds (exit 1 above)")
    args = ap.parse_args(argv)
    from _tiny import job_counts

    with tempfile.TemporaryDirectory(prefix="neopain-bench-") as tmp:
        root = make_study(Path(tmp), args.videos, args.backbones, args.layers, args.shards)
        n_shards = yaml.safe_load((root / "config.yaml").read_text())["shards"]["count"]
        bbs = yaml.safe_load((root / "config.yaml").read_text())["extract"]["backbones"]
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(root), "--configfile", str(root / "config.yaml"),
               "--cores", "1", "--dry-run"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 2
        counts = job_counts(proc.stdout + proc.stderr)
    total = sum(counts.values())
    import platform
    from importlib.metadata import version

    from neopain.core.runtime import cpu_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}; python "
          f"{platform.python_version()}, snakemake {version('snakemake')}")
    desc = ", ".join(f"{b}{v['layers']}" for b, v in bbs.items())
    print(f"backbones x layers: {desc}")
    print(f"jobs per rule: {counts}")
    print(f"planning time (snakemake -n, {args.videos} videos, "
          f"{args.backbones} backbones x {args.layers} layers, {n_shards} shards, "
          f"{total} jobs): "
          f"{elapsed:.1f} s (target < {args.limit:.0f} s)")
    return 0 if elapsed < args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
