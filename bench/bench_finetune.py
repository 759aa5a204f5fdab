"""Fine-tuning vs frozen features on ckplus48, and training throughput (images/s).

    .venv/bin/python bench/bench_finetune.py [--backbone mobilenet_v2] [--input-size 112]
        [--unfreeze last_block] [--epochs 10] [--threads 1] [--data ../shared/data]
    # GPU throughput of VGG-16 without weights (synthetic images, no data needed):
    .venv/bin/python bench/bench_finetune.py --backbone vgg16 --random-init --device cuda \
        --unfreeze all --batch-size 64 --throughput-only

Task (illustrative, not pain; the one of ``bench/ckplus48_task.py``): negative (anger,
contempt, disgust, fear, sadness) vs positive (happy, surprise) expression on the 981
ckplus48 crops of 118 subjects, 5-fold ``group_kfold`` by subject (seed 0), every crop
at ``--input-size`` (48 px grey upsampled). Per fold, with the fold's training subjects
only:

* frozen: the backbone's ``penultimate`` features at the same input size, (a) every
  selector x k x classifier of the paper preset, the best by frame accuracy *chosen on
  the test folds* (Table 5's optimistic choice), and (b) a linear probe (L2 logistic
  regression, C=1, standardised) on all features, nothing chosen on test data;
* fine-tuned: ``neopain.finetune`` (new head, ``--unfreeze``, augmentation, class-balanced
  loss, early stopping on 15% of the training subjects).

Test predictions are pooled over folds; accuracy and AUC with 95% subject-bootstrap CIs
(1,000 replicates), DeLong p-values of fine-tuned vs each frozen baseline (frame level),
video level = CK+ sequence (mean of its 3 crops). Prints the machine, versions, figures
and the median training images/s (training steps only: decode + augmentation + forward +
backward + update). ``--throughput-only`` times training steps alone (``--synthetic``
random images when the data is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def machine(device) -> dict:
    import torch

    from neopain.core.runtime import cpu_model

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device)}
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        with open("/proc/loadavg") as fh:
            info["loadavg_at_start"] = fh.read().split()[:3]
    except OSError:
        pass
    return info


def ckplus48_set(data: Path):
    from ckplus48_task import load_meta

    from neopain.finetune.data import ImageSet

    meta = load_meta(data)
    images = [(data / p).read_bytes() for p in meta["image"]]
    ds = ImageSet(images, meta["y"].to_numpy(np.int64), meta["subject_id"].to_numpy(object),
                  meta["video_id"].to_numpy(object), meta["frame"].to_numpy(np.int32),
                  ("positive", "negative"))
    return meta, ds


def synthetic_set(n: int, size: int, seed: int = 0):
    import cv2

    from neopain.finetune.data import ImageSet

    rng = np.random.default_rng(seed)
    imgs = [cv2.imencode(".jpg", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))[1]
            .tobytes() for _ in range(n)]
    y = rng.integers(0, 2, n).astype(np.int64)
    subj = np.array([f"s{i % 20}" for i in range(n)], dtype=object)
    return ImageSet(imgs, y, subj, subj.copy(), np.zeros(n, np.int32), ("a", "b"))


def frozen_features(backbone: str, ds, size: int, device, batch: int = 64) -> np.ndarray:
    import torch

    from neopain.features.backbones import load_backbone
    from neopain.features.extract import to_input
    from neopain.finetune.train import decoded_batches

    net, _ = load_backbone(backbone, ["penultimate"], cfg={"input_size": size})
    net = net.eval().to(device)
    parts = []
    with torch.inference_mode():
        for idx, b in decoded_batches(ds.images, range(len(ds)), size, batch, 1):
            parts.append(net(to_input(b, device))["penultimate"].float().cpu().numpy())
    return np.concatenate(parts)


def linear_probe(X, meta, split, seed=0):
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neopain.learn.split import fold_subjects

    rows = []
    for fold in sorted(split["fold"].unique()):
        tr_s, te_s = fold_subjects(split, fold)
        tr = meta["subject_id"].isin(tr_s).to_numpy()
        te = meta["subject_id"].isin(te_s).to_numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000,
                                                                 random_state=seed))
        clf.fit(X[tr], meta.loc[tr, "y"])
        part = meta.loc[te, ["video_id", "subject_id", "frame", "y"]].copy()
        part["score"] = clf.predict_proba(X[te])[:, 1]
        part["pred"] = clf.predict(X[te]).astype(np.int8)
        part["fold"] = fold
        rows.append(part)
    out = pd.concat(rows, ignore_index=True)
    out["protocol"], out["selector"], out["k"], out["classifier"] = "gkf5", "none", X.shape[1], \
        "logreg"
    return out


def throughput(args, device) -> dict:
    import torch

    from neopain.finetune.network import build_net
    from neopain.finetune.settings import settings
    from neopain.finetune.train import train

    size = args.input_size
    net, parent = build_net(args.backbone, 2, args.layer,
                            init="random" if args.random_init else "pretrained",
                            input_size=size)
    size = net.input_size
    data = None
    if not args.synthetic and (args.data / "ckplus48.csv").is_file():
        _, data = ckplus48_set(args.data)
        data = data.subset(np.arange(len(data)) < args.steps * args.batch_size)
    if data is None:
        data = synthetic_set(args.steps * args.batch_size, max(size, 64))
    cfg = settings({"epochs": args.epochs_tp, "batch_size": args.batch_size,
                    "unfreeze": args.unfreeze, "val_fraction": 0.0, "input_size": size})
    res = train(net, data, None, cfg, device=device, precision=args.precision,
                workers=args.workers)
    ips = [h["images_per_s"] for h in res.history]
    return {"backbone": args.backbone, "init": parent["kind"], "input_size": size,
            "unfreeze": args.unfreeze, "batch_size": args.batch_size, "images": len(data),
            "epochs": len(ips), "images_per_s_by_epoch": [round(v, 1) for v in ips],
            "train_images_per_s": round(float(np.median(ips[1:] if len(ips) > 1 else ips)), 1),
            "precision": _precision(device, args.precision), "workers": args.workers,
            "data": "synthetic" if data.classes == ("a", "b") else "ckplus48"}


def _precision(device, precision):
    from neopain.features.extract import precision_name

    return precision_name(device, precision)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--layer", default=None, help="default: penultimate (VGG: fc7_post)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="default: 112 (fer: 64); the crops are 48 px")
    ap.add_argument("--unfreeze", default="last_block", choices=("head", "last_block", "all"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--body-lr-scale", type=float, default=0.1)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None,
                    help="JPEG decode threads (default: 1 on a CPU, 8 on CUDA)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--random-init", action="store_true",
                    help="no pretrained weights (throughput only: e.g. vgg16 on a GPU)")
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--synthetic", action="store_true", help="random images (throughput)")
    ap.add_argument("--steps", type=int, default=20, help="throughput: steps per epoch")
    ap.add_argument("--epochs-tp", type=int, default=3, help="throughput: epochs (first = "
                    "warm-up, not counted)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    from neopain.core.runtime import keep_freed_memory

    keep_freed_memory()  # as the finetune rules do (runtime.run)
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.workers is None:
        a.workers = 8 if device.type == "cuda" else 1
    if a.layer is None:
        from neopain.features.registry import get_spec
        from neopain.finetune.network import default_layer

        a.layer = default_layer(get_spec(a.backbone))
    if a.input_size is None:
        a.input_size = 64 if a.backbone == "fer" else (None if a.throughput_only else 112)
    print(json.dumps({"machine": machine(device)}, indent=1), flush=True)
    if a.throughput_only or a.random_init:
        tp = throughput(a, device)
        print(json.dumps({"throughput": tp}, indent=1))
        if a.out:
            a.out.write_text(json.dumps({"machine": machine(device), "throughput": tp}, indent=1))
        return 0

    import pandas as pd

    from neopain.finetune.folds import fold_data
    from neopain.finetune.jobs import scores_frame
    from neopain.finetune.network import build_net
    from neopain.finetune.settings import settings
    from neopain.finetune.train import fit, predict
    from neopain.learn.classify import cross_validate
    from neopain.learn.delong import delong_test
    from neopain.learn.evaluate import table5
    from neopain.learn.metrics import metrics_table
    from neopain.report.markdown import to_markdown, with_ci_columns
    from neopain.learn.split import make_split

    import ckplus48_task as task

    t0 = time.perf_counter()
    meta, ds = ckplus48_set(a.data)
    split = make_split(meta, f"group_kfold{a.folds}",
                       {"kind": "group_kfold", "n_splits": a.folds, "seed": a.seed})
    X = frozen_features(a.backbone, ds, a.input_size, device)
    t_feat = time.perf_counter() - t0
    frozen = cross_validate(X, meta, split, task.SELECTORS, task.KS, task.CLASSIFIERS,
                            seed=a.seed, preset="paper")
    probe = linear_probe(X, meta, split, a.seed)
    t_frozen = time.perf_counter() - t0 - t_feat
    print(f"frozen features {X.shape} in {t_feat:.0f} s, frozen classifiers in "
          f"{t_frozen:.0f} s", flush=True)

    cfg = settings({"epochs": a.epochs, "patience": a.patience, "batch_size": a.batch_size,
                    "lr": a.lr, "body_lr_scale": a.body_lr_scale, "unfreeze": a.unfreeze,
                    "val_fraction": a.val_fraction, "input_size": a.input_size,
                    "seed": a.seed})
    tuned, ips, per_fold = [], [], []
    t1 = time.perf_counter()
    for fold in sorted(split["fold"].unique()):
        fd = fold_data(ds, split, int(fold), cfg["val_fraction"], a.seed)
        net, parent = build_net(a.backbone, 2, a.layer, input_size=a.input_size,
                                dropout=cfg["dropout"], seed=a.seed + int(fold))
        tf = time.perf_counter()
        res, _ = fit(net, parent, fd.train, fd.val, cfg, device=device,
                     precision=a.precision, workers=a.workers, resume_dir=None)
        probs = predict(net, fd.test, 64, device, a.precision, a.workers)
        sc = scores_frame(probs, fd.test, "gkf5", int(fold), "finetune", net.feature_dim,
                          {})
        tuned.append(sc)
        ips += [h["images_per_s"] for h in res.history]
        acc = float((sc["pred"] == sc["y"]).mean())
        per_fold.append({"fold": int(fold), "train": len(fd.train),
                         "val": len(fd.val) if fd.val else 0, "test": len(fd.test),
                         "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                         "test_accuracy": round(acc, 4), "seconds": round(time.perf_counter()
                                                                          - tf, 1),
                         "images_per_s": round(float(np.median(
                             [h["images_per_s"] for h in res.history])), 1)})
        print(json.dumps(per_fold[-1]), flush=True)
    t_ft = time.perf_counter() - t1
    tuned = pd.concat(tuned, ignore_index=True)

    def table(sc, name):
        sc = sc.assign(backbone=a.backbone, layer=a.layer)   # the frozen and tuned rows' labels
        t = table5(metrics_table(sc, "mean", n_boot=a.n_boot, seed=a.seed))
        t.insert(3, "method", name)
        return t, sc

    t_frozen_best, fz = table(frozen, "frozen: best selector/k/classifier (chosen on test)")
    t_probe, pr = table(probe, "frozen: linear probe on all features")
    t_tuned, tu = table(tuned, f"fine-tuned ({a.unfreeze})")
    best = t_frozen_best.iloc[0]
    sel, k = best["selector"].rstrip(")").split("(")
    fz = fz[(fz.selector == sel) & (fz.k == int(k)) & (fz.classifier == best["classifier"])]
    keys = ["fold", "video_id", "subject_id", "frame"]
    dl = {}
    for name, other in (("vs_frozen_best", fz), ("vs_linear_probe", pr)):
        j = tu.merge(other, on=keys, suffixes=("_a", "_b"))
        dl[name] = delong_test(j["y_a"].to_numpy(), j["score_a"].to_numpy(),
                               j["score_b"].to_numpy())
    out = pd.concat([t_frozen_best, t_probe, t_tuned], ignore_index=True)
    cols = ["method", "selector", "classifier", "frame_accuracy", "frame_accuracy_lo",
            "frame_accuracy_hi", "frame_auc", "frame_auc_lo", "frame_auc_hi",
            "video_accuracy", "video_accuracy_lo", "video_accuracy_hi", "video_auc",
            "video_auc_lo", "video_auc_hi", "n_frames", "n_subjects"]
    note = [f"ckplus48 negative vs positive, {a.folds}-fold group_kfold by subject; "
            f"{a.backbone} at {a.input_size} px; fine-tuning: unfreeze {a.unfreeze}, "
            f"<= {a.epochs} epochs, patience {a.patience}, batch {a.batch_size}, lr {a.lr} "
            f"(body x {a.body_lr_scale}), val {a.val_fraction} of training subjects; "
            f"{a.n_boot} subject-bootstrap replicates."]
    md = to_markdown(with_ci_columns(out[cols]), "Fine-tuned vs frozen features (ckplus48)",
                     note)
    print(md)
    figures = {
        "frame_accuracy": {r["method"]: round(float(r["frame_accuracy"]), 4)
                           for _, r in out.iterrows()},
        "frame_auc": {r["method"]: round(float(r["frame_auc"]), 4) for _, r in out.iterrows()},
        "delong_frame": {k: {kk: round(v, 4) for kk, v in d.items()} for k, d in dl.items()},
        "train_images_per_s_median": round(float(np.median(ips)), 1),
        "seconds": {"frozen_features": round(t_feat), "frozen_classifiers": round(t_frozen),
                    "finetune_all_folds": round(t_ft)},
        "per_fold": per_fold,
    }
    print(json.dumps(figures, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"machine": machine(device), "args": {
            k: str(v) for k, v in vars(a).items()}, "figures": figures,
            "table": json.loads(out.to_json(orient="records"))}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
