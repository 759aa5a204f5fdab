"""The paper's pipeline vs the nested whole-feature path, with and without subject
baselines, on real expression data in ../shared/data; and the nested search's cost.

    .venv/bin/python bench/bench_nested.py [--data ../shared/data] [--out results/bench_nested]
                                           [--n-boot 1000] [--cost-only]

Tasks (illustrative, not pain; labels as in bench/ckplus48_task.py):

* ``ckplus48 neg/pos``: 981 CK+ face crops (118 subjects, 327 sequences of 3 crops),
  negative (anger, contempt, disgust, fear, sadness) vs positive (happy, surprise);
  5-fold ``group_kfold`` by subject; video = sequence.
* ``sequences apex/neutral``: the 40 CK+ sequences of 10 subjects as videos; each gives
  a "neutral" video (its first 3 frames) and an "apex" video (its last 3 frames),
  negative expressions only (anger, disgust, fear, sadness): every subject has both
  states, as a rest and a procedure recording; leave-one-subject-out.
* ``sequences neg/pos``: the 40 sequences (all frames) as videos, negative vs positive
  (happiness, surprise); leave-one-subject-out.

Features: the offline ImageNet mobilenet_v2 ``penultimate`` (1,280). ckplus48 crops are
already faces; for the sequences the face box is found by MTCNN on each sequence's first
frame and kept for its frames (subjects sit still), cropped square with 20% margin and
resized to 224 px (a shortcut for the tracker, stated here).

For each task: the paper pipeline (ReliefF/SU x k 5/10/15 x NB/kNN/SVM/RBF-SVM/RF,
paper preset, frame models, video = mean of frame scores): its median and best-of-N
video AUC (best chosen on test: optimistic); the nested whole-feature path
(:mod:`neopain.learn.nested`, the workflow's default search: mean+std pooling, L2 logistic
regression and linear SVM over their grids, inner 5-fold by subject); each with subject
baseline ``none`` and ``center``, and the nested search over both baselines. AUCs with
95% subject-bootstrap CIs; subject-clustered DeLong p-values (nested vs paper best,
nested vs paper median, centred vs not). The cost section times the default nested
search (2 baselines, 7 models, 2 ensembles, permutation rerun) on 200 videos x 3
feature tables (1,280 / 1,280 / 2,048 features, 25 subjects, 60 frames per video,
synthetic values: the cost depends on the shapes only), leave-one-subject-out.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NEGATIVE = {"anger", "contempt", "disgust", "fear", "sadness"}
SPACE = {"poolings": {"mean_std": ["mean", "std"]}, "selection": [{"selector": "all"}],
         "models": {"logreg_l2": {}, "linear_svm": {}}, "inner_splits": 5,
         "ensembles": ["mean", "stack"]}


def _ck48():
    spec = importlib.util.spec_from_file_location("ckplus48_task",
                                                  ROOT / "bench" / "ckplus48_task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sequence_features(data: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(frame meta, mobilenet_v2 penultimate features) of every CK+ sequence frame."""
    import torch
    import torch.nn.functional as F
    from facenet_pytorch import MTCNN
    from PIL import Image

    from neopain.features.backbones import load_backbone

    rows = list(csv.DictReader(open(data / "ckplus_sequences.csv")))
    mtcnn = MTCNN(keep_all=False, device="cpu")
    net, _ = load_backbone("mobilenet_v2", ["penultimate"])
    net.eval()
    metas, feats = [], []
    for r in rows:
        folder = data / r["path"]
        frames = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        first = Image.open(frames[0]).convert("RGB")
        boxes, _ = mtcnn.detect(first)
        if boxes is None:
            continue
        x0, y0, x1, y1 = boxes[0]
        side = 1.2 * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
        crops = [np.asarray(Image.open(f).convert("RGB").crop(box).resize((224, 224)),
                            dtype=np.float32) / 255.0 for f in frames]
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            feats.append(net(F.interpolate(x, size=(224, 224)))["penultimate"].numpy())
        for i in range(len(frames)):
            metas.append((r["sequence"], r["subject"], r["emotion"], i, len(frames)))
    meta = pd.DataFrame(metas, columns=["sequence", "subject_id", "emotion", "frame", "n"])
    return meta, np.concatenate(feats).astype(np.float32)


def sequence_tasks(meta: pd.DataFrame, X: np.ndarray) -> dict:
    neg = meta["emotion"].isin(NEGATIVE).to_numpy()
    first = (meta["frame"] < 3).to_numpy()
    last = (meta["frame"] >= meta["n"] - 3).to_numpy()
    keep = neg & (first | last)
    apex = meta[keep].assign(video_id=lambda d: d["sequence"] + np.where(
        d["frame"] < 3, "_neutral", "_apex"), y=lambda d: (d["frame"] >= 3).astype(np.int8))
    negpos = meta.assign(video_id=meta["sequence"], y=neg.astype(np.int8))
    return {"sequences apex/neutral": (apex.reset_index(drop=True), X[keep]),
            "sequences neg/pos": (negpos, X)}


def _split(meta, kind):
    from neopain.learn.split import make_split

    samples = meta.drop_duplicates("video_id").assign(
        label=lambda d: np.where(d["y"] == 1, "pos", "neg"))
    spec = {"kind": "loso"} if kind == "loso" else {"kind": "group_kfold", "n_splits": 5,
                                                     "seed": 0}
    return make_split(samples, kind, spec)


def _with_ci(y, pred, score, subj, n_boot):
    from neopain.learn.metrics import binary_metrics, bootstrap_ci

    auc = binary_metrics(y, pred, score)["auc"]
    lo, hi = bootstrap_ci(y, pred, score, subj, n_boot, 0, 0.95, metrics=("auc",))["auc"]
    return auc, lo, hi


def run_task(name, meta, X, kind, n_boot) -> tuple[list[dict], list[dict]]:
    from neopain.learn import nested as ns
    from neopain.features.baseline import subject_baseline
    from neopain.learn.classify import cross_validate
    from neopain.learn.clustered import clustered_delong
    from neopain.learn.metrics import metrics_table, video_level

    split = _split(meta, kind)
    rows, tests, video_scores = [], [], {}
    for base in ("none", "center"):
        Xb = subject_baseline(X, meta["subject_id"].to_numpy(), base)
        t0 = time.perf_counter()
        sc = cross_validate(Xb, meta, split, {"relieff": {"n_neighbors": 10}, "su": {}},
                            [5, 10, 15], {c: {} for c in ("nb", "knn", "svm", "svm_rbf", "rf")},
                            preset="paper", backbone="mobilenet_v2", layer="penultimate")
        m = metrics_table(sc, "mean", n_boot=n_boot)
        v = m[m.level == "video"].reset_index(drop=True)
        vl = video_level(sc, "mean")
        for est, idx in (("paper best-of-N (optimistic)", v["auc"].idxmax()),
                         ("paper median", v["auc"].sort_values().index[(len(v) - 1) // 2])):
            r = v.loc[idx]
            part = vl[(vl.selector == r.selector) & (vl.k == r.k)
                      & (vl.classifier == r.classifier)].sort_values("video_id")
            video_scores[(est, base)] = part
            rows.append({"task": name, "estimate": est, "baseline": base, "auc": r["auc"],
                         "auc_lo": r["auc_lo"], "auc_hi": r["auc_hi"], "n_configurations":
                         len(v), "configuration": f"{r.selector}({int(r.k)}) {r.classifier}",
                         "seconds": round(time.perf_counter() - t0, 1)})
    for bases in (["none"], ["center"], ["none", "center"]):
        t0 = time.perf_counter()
        views = ns.build_views({("mobilenet_v2", "penultimate"): (X, meta)}, bases,
                               SPACE["poolings"])
        cands = ns.candidates(views, SPACE["selection"], SPACE["models"])
        res = ns.nested_cv(views, cands, split, inner_splits=SPACE["inner_splits"], seed=0)
        p = res["predictions"].sort_values("video_id")
        auc, lo, hi = _with_ci(p["y"], p["pred"], p["score"], p["subject_id"], n_boot)
        label = "+".join(bases)
        video_scores[("nested", label)] = p
        chosen = res["choices"]["baseline"].value_counts().to_dict()
        rows.append({"task": name, "estimate": "nested (honest)", "baseline": label,
                     "auc": auc, "auc_lo": lo, "auc_hi": hi, "n_configurations": len(cands),
                     "configuration": f"chosen baselines {chosen}",
                     "seconds": round(time.perf_counter() - t0, 1)})

    def compare(a, b):
        A, B = video_scores[a], video_scores[b]
        j = A.merge(B, on=["video_id", "subject_id"], suffixes=("_a", "_b"))
        t = clustered_delong(j["y_a"].to_numpy(), j["score_a"].to_numpy(),
                             j["score_b"].to_numpy(), j["subject_id"].to_numpy())
        tests.append({"task": name, "a": " ".join(a), "b": " ".join(b),
                      "auc_a": t.get("auc_a"), "auc_b": t.get("auc_b"), "p": t.get("p")})

    compare(("nested", "none+center"), ("paper best-of-N (optimistic)", "none"))
    compare(("nested", "none+center"), ("paper median", "none"))
    compare(("nested", "center"), ("nested", "none"))
    compare(("paper median", "center"), ("paper median", "none"))
    return rows, tests


def cost(seed: int = 0) -> dict:
    """Wall time of the workflow's default nested search at study scale (module doc)."""
    from neopain.learn import nested as ns
    from neopain.learn.split import make_split

    rng = np.random.default_rng(seed)
    n_sub, per_sub, frames = 25, 8, 60
    vids = np.repeat([f"v{i:03d}" for i in range(n_sub * per_sub)], frames)
    subj = np.repeat([f"s{i:02d}" for i in range(n_sub)], per_sub * frames)
    y = np.repeat(np.tile([0, 1], n_sub * per_sub // 2), frames)
    meta = pd.DataFrame({"video_id": vids, "subject_id": subj, "y": y})
    tables = {(f"t{i}", "f"): (rng.normal(size=(len(meta), d)).astype(np.float32), meta)
              for i, d in enumerate((1280, 1280, 2048))}
    samples = meta.drop_duplicates("video_id").assign(
        label=lambda d: np.where(d["y"] == 1, "pain", "no_pain"))
    split = make_split(samples, "loso", {"kind": "loso"})
    t0 = time.perf_counter()
    views = ns.build_views(tables, ["none", "center"], SPACE["poolings"])
    cands = ns.candidates(views, SPACE["selection"], SPACE["models"])
    kw = {"inner_splits": 5, "seed": seed, "ensembles": SPACE["ensembles"]}
    ns.nested_cv(views, cands, split, **kw)
    t1 = time.perf_counter()
    ns.nested_cv(ns.permute_labels(views, seed), cands, split, **kw)
    t2 = time.perf_counter()
    return {"videos": n_sub * per_sub, "subjects": n_sub, "tables": 3, "candidates":
            len(cands) + 2, "outer_folds": n_sub, "search_s": round(t1 - t0, 1),
            "with_permutation_rerun_s": round(t2 - t0, 1)}


def machine() -> dict:
    import sklearn
    import torch

    from neopain.core.runtime import cpu_model

    return {"cpu": cpu_model(), "cores": __import__("os").cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "torch": torch.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench_nested")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--cost-only", action="store_true")
    a = ap.parse_args(argv)
    print(json.dumps(machine()))
    c = cost()
    print("cost:", json.dumps(c))
    if a.cost_only:
        return 0
    ck = _ck48()
    meta48 = ck.load_meta(a.data)
    tasks = {"ckplus48 neg/pos": (meta48, ck.mobilenet_features(a.data, meta48), "g5")}
    smeta, sX = sequence_features(a.data)
    for name, (m, X) in sequence_tasks(smeta, sX).items():
        tasks[name] = (m, X, "loso")
    rows, tests = [], []
    for name, (m, X, kind) in tasks.items():
        r, t = run_task(name, m[["video_id", "subject_id", "y"]].assign(
            frame=m.groupby("video_id").cumcount()), X, kind, a.n_boot)
        rows += r
        tests += t
        print(pd.DataFrame(r).to_string(index=False), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    res, dl = pd.DataFrame(rows), pd.DataFrame(tests)
    res.to_parquet(a.out / "results.parquet", index=False)
    dl.to_parquet(a.out / "delong.parquet", index=False)
    print(dl.to_string(index=False))
    (a.out / "cost.json").write_text(json.dumps(c, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
