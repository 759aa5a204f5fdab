"""All selectors x k x classifiers on ckplus48: a binary task with subject-bootstrap CIs.

    .venv/bin/python bench/ckplus48_task.py [--data ../shared/data] [--out results/ckplus48]

Task (illustrative, not pain): **negative vs positive expression** on the 981
CK+ face crops of 118 subjects in ``ckplus48/``: y = 1 for anger, contempt,
disgust, fear, sadness (525 crops), y = 0 for happy, surprise (456). Features:
the offline ImageNet ``mobilenet_v2`` ``penultimate`` layer (1,280, pooled) of
each 48x48 grey crop replicated to RGB and resized to 224x224 (bilinear).
Protocol: 5-fold ``group_kfold`` by subject (``neopain.learn.split``, stratified by
the subject's majority label, seed 0); per fold ReliefF and SU are fitted on the
training subjects' crops, then every k in (5, 10, 15) x classifier of the
``paper`` preset. Video level = CK+ sequence (its 3 crops), mean of frame scores.
Writes ``metrics.parquet``, ``metrics.md`` and ``table.md`` (best per selector,
with 95% CIs: 1,000 subject-bootstrap replicates) under ``--out``; nothing is
cached.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NEGATIVE = {"anger", "contempt", "disgust", "fear", "sadness"}
SELECTORS = {"relieff": {"n_neighbors": 10}, "su": {}}
KS = [5, 10, 15]
CLASSIFIERS = {"nb": {}, "knn": {}, "svm": {}, "svm_rbf": {}, "rf": {}}


def load_meta(data: Path) -> pd.DataFrame:
    rows = list(csv.DictReader(open(data / "ckplus48.csv")))
    meta = pd.DataFrame({
        "image": [r["image"] for r in rows],
        "video_id": [r["sequence"] for r in rows],
        "subject_id": [r["subject"] for r in rows],
        "emotion": [r["emotion"] for r in rows],
    })
    meta["y"] = meta["emotion"].isin(NEGATIVE).astype(np.int8)
    meta["label"] = np.where(meta["y"] == 1, "negative", "positive")
    meta["frame"] = meta.groupby("video_id").cumcount().astype(np.int32)
    return meta


def mobilenet_features(data: Path, meta: pd.DataFrame, batch: int = 64) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from neopain.features.backbones import load_backbone

    net, _ = load_backbone("mobilenet_v2", ["penultimate"])
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(meta), batch):
            grey = np.stack([np.asarray(Image.open(data / p).convert("L"), dtype=np.float32)
                             for p in meta["image"].iloc[i:i + batch]])
            x = torch.from_numpy(grey / 255.0)[:, None].expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
            out.append(net(x)["penultimate"].numpy())
    return np.concatenate(out).astype(np.float32)


def run(data: Path, n_boot: int = 1000, seed: int = 0, X: np.ndarray | None = None):
    """(metrics, best table, timings) of the whole task."""
    from neopain.learn.classify import cross_validate
    from neopain.learn.metrics import metrics_table
    from neopain.learn.split import make_split

    meta = load_meta(data)
    t0 = time.perf_counter()
    if X is None:
        X = mobilenet_features(data, meta)
    t1 = time.perf_counter()
    split = make_split(meta, "group_kfold5",
                       {"kind": "group_kfold", "n_splits": 5, "seed": seed})
    scores = cross_validate(X, meta, split, SELECTORS, KS, CLASSIFIERS, seed=seed,
                            preset="paper", backbone="mobilenet_v2", layer="penultimate")
    t2 = time.perf_counter()
    metrics = metrics_table(scores, "mean", n_boot=n_boot, seed=seed)
    t3 = time.perf_counter()
    frame = metrics[metrics.level == "frame"]
    best = (frame.sort_values(["selector", "auc"], ascending=[True, False])
            .drop_duplicates("selector"))
    cols = ["selector", "k", "classifier", "accuracy", "accuracy_lo", "accuracy_hi", "auc",
            "auc_lo", "auc_hi", "balanced_accuracy", "balanced_accuracy_lo",
            "balanced_accuracy_hi", "n", "n_subjects"]
    timings = {"features_s": t1 - t0, "cross_validation_s": t2 - t1, "metrics_s": t3 - t2}
    return metrics, best[cols].reset_index(drop=True), timings, X


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "ckplus48")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)
    from neopain.report.markdown import to_markdown, with_ci_columns

    metrics, best, timings, _ = run(a.data, a.n_boot)
    a.out.mkdir(parents=True, exist_ok=True)
    metrics.to_parquet(a.out / "metrics.parquet", index=False)
    note = ["ckplus48, negative (anger, contempt, disgust, fear, sadness) vs positive (happy, "
            "surprise); mobilenet_v2 penultimate; 5-fold group_kfold by subject; paper preset; "
            f"95% CIs: {a.n_boot} subject-bootstrap replicates."]
    cols = ["selector", "k", "classifier", "level", "accuracy", "accuracy_lo", "accuracy_hi",
            "auc", "auc_lo", "auc_hi", "balanced_accuracy", "balanced_accuracy_lo",
            "balanced_accuracy_hi", "sensitivity", "specificity", "f1", "n", "n_subjects"]
    (a.out / "metrics.md").write_text(to_markdown(with_ci_columns(metrics[cols]),
                                                  "ckplus48: all configurations", note))
    (a.out / "table.md").write_text(to_markdown(with_ci_columns(best),
                                                "ckplus48: best configuration per selector "
                                                "(frame level, by AUC)", note))
    print((a.out / "table.md").read_text())
    print({k: round(v, 1) for k, v in timings.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
