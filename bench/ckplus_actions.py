"""Facial actions vs FER-2013 features on the CK+ sequences, subject-disjoint (LOSO), video level.

    .venv/bin/python bench/ckplus_actions.py [--data ../shared/data] [--out results/ckplus_actions]

40 CK+ sequences of 10 subjects (``ckplus_sequences/``), each from a neutral first frame to
the apex.  Every sequence gives two 3-frame clips: its first 3 frames (neutral) and its last 3
(apex).  Tasks (illustrative, posed adult expressions, not pain):

* ``neg_apex_vs_neutral``: apex clips of the negative sequences (anger, disgust, fear,
  sadness; y = 1) vs the neutral clips of the same sequences (y = 0);
* ``neg_vs_pos``: apex clips, negative (y = 1) vs positive (happiness, surprise; y = 0).

Per frame: MTCNN, the 468-point mesh (LiteRT, ``face_landmark.tflite``), the aligned 224 crop.
Features per clip (mean over its 3 frames): ``actions`` = the 14 canonical-pose NFCS/AU
descriptors + 5 wrinkle-texture energies of :mod:`neopain.features.actions`; ``fer`` = the FER-2013
mini-Xception ``conv_last`` layer (2,048). Model: StandardScaler + L2 logistic regression
(C = 1) fitted on the training subjects of each LOSO fold; ``fused`` = mean of the two
models' probabilities; ``pose`` (control: mean yaw, pitch, roll and their absolute values,
from the same mesh fit) shows how much head pose alone separates the classes;
``actions_pose_out``: the actions with yaw/pitch/roll regressed out on the training subjects
(``actions.PoseResidualizer``). ``centred``: each subject's mean feature vector over all its clips
subtracted first (label-free but uses the test subject's own unlabelled clips:
transductive). AUC with 95% CIs (1,000 subject-bootstrap replicates) and DeLong p-values
of fused vs each and actions vs FER.  Prints machine, versions and timings.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NEGATIVE = {"anger", "disgust", "fear", "sadness"}
POSITIVE = {"happiness", "surprise"}


def clip_features(data: Path, rows: list[dict]):
    import cv2
    import torch

    from neopain.features import actions as A
    from neopain.features.backbones import load_backbone
    from neopain.faces.crop import align, transform_points
    from neopain.faces.detectors.facemesh import FaceMeshRefiner
    from neopain.faces.detectors.mtcnn import MTCNNDetector
    from neopain.features.extract import Runner

    det = MTCNNDetector(max_side=None)
    mesh = FaceMeshRefiner(model_dir=ROOT / "resources" / "weights", backend="litert",
                           replace_five=False, threads=1)
    net, _ = load_backbone("fer", ["conv_last"])
    run = Runner(net, torch.device("cpu"))
    recs, act, fer, pose = [], [], [], []
    for r in rows:
        files = sorted((data / r["path"]).glob("*.png"))
        for phase, chosen in (("neutral", files[:3]), ("apex", files[-3:])):
            a_rows, crops, p_rows = [], [], []
            for f in chosen:
                img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
                face = det.detect(img)[0]
                m = mesh.refine(img, face)
                crop, M = align(img, face.landmarks, 224)
                grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
                v = A.frame_actions(m.dense, m.depth)
                v.update(A.texture_energy(grey, transform_points(M, m.dense)))
                a_rows.append([v[k] for k in tuple(A.DESCRIPTORS) + tuple(A.PATCHES)])
                p_rows.append([v[k] for k in A.POSE] + [abs(v[k]) for k in A.POSE])
                crops.append(crop)
            act.append(np.mean(a_rows, 0))
            pose.append(np.mean(p_rows, 0))
            fer.append(run(np.stack(crops))["conv_last"].float().numpy().reshape(3, -1).mean(0))
            recs.append({"video_id": f"{r['sequence']}_{phase}", "subject_id": r["subject"],
                         "emotion": r["emotion"], "phase": phase})
    return pd.DataFrame(recs), np.asarray(act), np.asarray(fer), np.asarray(pose)


def centre(X: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    out = X.copy()
    for s in np.unique(subjects):
        out[subjects == s] -= X[subjects == s].mean(0)
    return out


def loso_scores(X: np.ndarray, y: np.ndarray, subjects: np.ndarray,
                pose_out: bool = False) -> np.ndarray:
    """LOSO probabilities; ``pose_out``: X's last 3 columns are yaw/pitch/roll, regressed
    out of the others on the training subjects (actions.PoseResidualizer) first."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from neopain.learn.posecontrol import PoseResidualizer
    p = np.full(len(y), np.nan)
    for s in np.unique(subjects):
        te = subjects == s
        if len(np.unique(y[~te])) < 2:
            continue
        steps = [PoseResidualizer(3)] if pose_out else []
        model = make_pipeline(*steps, StandardScaler(),
                              LogisticRegression(C=1.0, max_iter=5000))
        model.fit(X[~te], y[~te])
        p[te] = model.predict_proba(X[te])[:, 1]
    return p


def evaluate(meta, act, fer, pose, n_boot=1000):
    from sklearn.metrics import roc_auc_score

    from neopain.learn.delong import delong_test
    from neopain.learn.metrics import bootstrap_ci

    tasks = {
        "neg_apex_vs_neutral": (meta.emotion.isin(NEGATIVE), meta.phase == "apex"),
        "neg_vs_pos": (meta.phase == "apex", meta.emotion.isin(NEGATIVE)),
    }
    rows, tests, curves = [], [], {}
    for task, (keep, ypos) in tasks.items():
        m = keep.to_numpy()
        y = ypos.to_numpy()[m].astype(int)
        subj = meta.subject_id.to_numpy()[m]
        for centred in (False, True):
            Xa, Xf, Xp = act[m], fer[m], pose[m]
            if centred:
                Xa, Xf, Xp = centre(Xa, subj), centre(Xf, subj), centre(Xp, subj)
            sc = {"actions": loso_scores(Xa, y, subj), "fer": loso_scores(Xf, y, subj)}
            sc["fused"] = 0.5 * (sc["actions"] + sc["fer"])
            sc["pose"] = loso_scores(Xp, y, subj)  # control: head pose alone
            sc["actions_pose_out"] = loso_scores(np.hstack([Xa, Xp[:, :3]]), y, subj,
                                                 pose_out=True)
            for name, s in sc.items():
                ci = bootstrap_ci(y, (s >= 0.5).astype(int), s, subj, n_boot=n_boot)
                rows.append({"task": task, "centred": centred, "features": name,
                             "auc": roc_auc_score(y, s), "auc_lo": ci["auc"][0],
                             "auc_hi": ci["auc"][1], "n": int(len(y)), "n_pos": int(y.sum()),
                             "n_subjects": int(len(np.unique(subj)))})
                curves[(task, centred, name)] = (y, s)
            for a, b in (("fused", "actions"), ("fused", "fer"), ("actions", "fer"),
                         ("actions", "actions_pose_out")):
                d = delong_test(y, sc[a], sc[b])
                tests.append({"task": task, "centred": centred, "a": a, "b": b,
                              "auc_a": d["auc_a"], "auc_b": d["auc_b"], "p": d["p"]})
    return pd.DataFrame(rows), pd.DataFrame(tests), curves


def plot(curves, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    tasks = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.5))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        for (t, centred, name), (y, s) in curves.items():
            if t != task:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, ls="-" if centred else ":",
                    label=f"{name}{' centred' if centred else ''}")
        ax.plot([0, 1], [0, 1], c="grey", lw=0.5)
        ax.set(title=task, xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "ckplus_actions")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)
    import ai_edge_litert
    import sklearn
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python "
          f"{platform.python_version()}, torch {torch.__version__}, sklearn "
          f"{sklearn.__version__}, ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}")
    rows = list(csv.DictReader(open(a.data / "ckplus_sequences.csv")))
    t0 = time.perf_counter()
    meta, act, fer, pose = clip_features(a.data, rows)
    t1 = time.perf_counter()
    res, tests, curves = evaluate(meta, act, fer, pose, a.n_boot)
    t2 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    res.to_csv(a.out / "auc.csv", index=False)
    tests.to_csv(a.out / "delong.csv", index=False)
    plot(curves, a.out / "roc.png")
    pd.set_option("display.width", 160)
    print(res.round(3).to_string(index=False))
    print(tests.round(4).to_string(index=False))
    print(f"features {t1 - t0:.1f} s ({len(meta) * 3} frames), evaluation {t2 - t1:.1f} s; "
          f"figure {a.out / 'roc.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
