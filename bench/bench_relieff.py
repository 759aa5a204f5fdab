"""ReliefF benchmark: neopain.learn.relieff.ReliefF vs skrebate.ReliefF, and peak memory wide.

    .venv/bin/python bench/bench_relieff.py                 # both parts (minutes)
    .venv/bin/python bench/bench_relieff.py --part speed    # 3,000 x 4,096 vs skrebate
    .venv/bin/python bench/bench_relieff.py --part memory   # 3,000 x 147,968 (VGG-S conv5)
    .venv/bin/python bench/bench_relieff.py --json results/bench/relieff.json

Speed: the same seeded input (uniform floats, binary class, a few informative
columns) through ``ReliefF(n_neighbors=10)`` of both packages; prints both
wall times, the ratio and the largest score difference (skrebate treats a
column with <= 10 distinct values as discrete; the input has none).
Memory: a float32 3,000 x 147,968 matrix (1.78 GB, the conv5 table of 3,000
frames) in a child process; prints the fit time, the process peak RSS, the
RSS before the fit (input included) and tracemalloc's peak of the fit's
numpy allocations. Not a unit test: nothing here is timed inside pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def machine() -> dict:
    from neopain.core.runtime import cpu_model
    cpu = cpu_model()
    versions = {}
    for mod in ("numpy", "scipy", "sklearn", "numba", "torch", "skrebate"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - report, do not fail
            versions[mod] = f"unavailable ({type(exc).__name__})"
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        gpu = None
    return {"cpu": cpu, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "python": platform.python_version(), "gpu": gpu, "versions": versions}


def data(n: int, p: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.random((n, p), dtype=np.float64 if dtype == np.float64 else np.float32)
    for j, shift in zip(range(0, min(p, 40), 4), np.linspace(0.5, 0.05, 10)):
        X[:, j] += shift * y  # a few informative columns
    return X, y


def speed(n: int, p: int, skrebate: bool, n_jobs: int) -> dict:
    from neopain.learn.relieff import ReliefF

    X, y = data(n, p, np.float64)
    t = time.perf_counter()
    ReliefF(n_neighbors=10, n_jobs=n_jobs).fit(X[:64, :32], y[:64])  # numba compile/cache
    warm = time.perf_counter() - t
    sel = ReliefF(n_neighbors=10, n_jobs=n_jobs)
    t = time.perf_counter()
    sel.fit(X, y)
    ours = time.perf_counter() - t
    out = {"n": n, "p": p, "n_jobs": n_jobs, "backend": sel.backend_,
           "neopain_s": ours, "neopain_warmup_s": warm}
    print(f"neopain ReliefF ({sel.backend_}) {n} x {p}: {ours:.2f} s "
          f"(first-call compile/cache load {warm:.2f} s)", flush=True)
    if skrebate:
        import warnings

        from skrebate import ReliefF as SkReliefF

        warnings.filterwarnings("ignore")
        t = time.perf_counter()
        sk = SkReliefF(n_neighbors=10, n_jobs=n_jobs).fit(X, y)
        sk_s = time.perf_counter() - t
        diff = float(np.abs(sk.feature_importances_ - sel.scores_).max())
        same_top = bool(np.array_equal(np.argsort(-sk.feature_importances_, kind="stable")[:15],
                                       sel.ranking_[:15]))
        out.update(skrebate_s=sk_s, speedup=sk_s / ours, max_abs_score_diff=diff,
                   same_top15=same_top)
        print(f"skrebate ReliefF {n} x {p}: {sk_s:.1f} s; speed-up {sk_s / ours:.1f}x; "
              f"max |score diff| {diff:.3g}; same top-15: {same_top}", flush=True)
    return out


def memory_child(n: int, p: int, n_jobs: int) -> dict:
    import tracemalloc

    from neopain.learn.relieff import ReliefF

    ReliefF(n_neighbors=10).fit(*[a[:64] for a in data(64, 32, np.float32)])  # compile
    X, y = data(n, p, np.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t = time.perf_counter()
    sel = ReliefF(n_neighbors=10, n_jobs=n_jobs).fit(X, y)
    wall = time.perf_counter() - t
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n, "p": p, "dtype": "float32", "input_bytes": int(X.nbytes),
            "fit_s": wall, "backend": sel.backend_, "peak_rss_bytes": int(peak),
            "rss_before_fit_bytes": int(rss_before),
            "fit_traced_peak_bytes": int(traced_peak),
            "top5": sel.ranking_[:5].tolist()}


def memory(n: int, p: int, n_jobs: int) -> dict:
    cmd = [sys.executable, __file__, "--part", "memory-child", "--wide-n", str(n),
           "--wide-p", str(p), "--n-jobs", str(n_jobs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    gb = 2**30
    print(f"neopain ReliefF {n} x {p} float32 ({out['input_bytes'] / gb:.2f} GiB input): "
          f"{out['fit_s']:.1f} s; peak RSS {out['peak_rss_bytes'] / gb:.2f} GiB "
          f"(before fit {out['rss_before_fit_bytes'] / gb:.2f} GiB); fit's traced numpy "
          f"peak {out['fit_traced_peak_bytes'] / 2**20:.0f} MiB", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["all", "speed", "memory", "memory-child"],
                    default="all")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--p", type=int, default=4096)
    ap.add_argument("--wide-n", type=int, default=3000)
    ap.add_argument("--wide-p", type=int, default=147_968)
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--no-skrebate", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.part == "memory-child":
        print(json.dumps(memory_child(a.wide_n, a.wide_p, a.n_jobs)))
        return 0
    result = {"machine": machine()}
    print(json.dumps(result["machine"]), flush=True)
    if a.part in ("all", "speed"):
        result["speed"] = speed(a.n, a.p, not a.no_skrebate, a.n_jobs)
    if a.part in ("all", "memory"):
        result["memory"] = memory(a.wide_n, a.wide_p, a.n_jobs)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
