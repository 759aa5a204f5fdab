"""Synthetic feature tables with a known answer and exported artefacts built from them
(tests of neopain.deploy's export and prediction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neopain.deploy.choose import Configuration
from neopain.deploy.refit import Settings, export_model

MOBILENET_SHA = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INFORMATIVE = (3, 17)


def synthetic_table(n_subjects=8, frames=12, dim=40, seed=0, shift=2.5):
    """Every subject has a pain and a no-pain video of ``frames`` rows; only the columns
    ``INFORMATIVE`` carry the label (+shift for pain, one of them inverted)."""
    rng = np.random.default_rng(seed)
    X, y, subj = [], [], []
    for s in range(n_subjects):
        for label in (0, 1):
            x = rng.normal(size=(frames, dim))
            x[:, INFORMATIVE[0]] += shift * label
            x[:, INFORMATIVE[1]] -= shift * label
            X.append(x)
            y += [label] * frames
            subj += [f"S{s:02d}"] * frames
    return np.vstack(X).astype(np.float32), np.asarray(y, np.int8), np.asarray(subj)


def pipeline_settings(dim: int, backbone="mobilenet_v2", layer="penultimate",
                      weights_sha=MOBILENET_SHA, tracker_weights=None, track=None):
    return {
        "labels": ["no_pain", "pain"], "positive_label": "pain", "fps_for_images": 30.0,
        "track": dict(track or {"detector": "mtcnn", "max_side": 480, "search_every": 5}),
        "crop": {"size": 224, "jpeg_quality": 95},
        "tracker_weights": dict(tracker_weights or {}),
        "backbone": {"name": backbone, "layer": layer, "cfg": {"sha256": weights_sha},
                     "weights_file": "mobilenet_v2-b0353104.pth", "weights_sha256": weights_sha,
                     "input_size": 224, "dtype": "float32", "fast_decode": True},
    }


def make_artefact(path: Path, classifier="svm", preset="paper", k=2, dim=40, seed=0,
                  calibration="platt", selector="relieff", embed=None, **pipe_kw):
    X, y, subj = synthetic_table(dim=dim, seed=seed)
    cfg = Configuration("mobilenet_v2", "penultimate", "loso", selector, k, classifier)
    st = Settings(selector_params={"n_neighbors": 10} if selector == "relieff" else {},
                  prefilter={"method": "none"}, classifier_params={}, preset=preset, seed=seed)
    res = export_model(X, y, subj, cfg, st, path, pipeline=pipeline_settings(dim, **pipe_kw),
                       provenance={"note": "synthetic"}, calibration=calibration,
                       calibration_splits=4, embed_weights=embed)
    return res, (X, y, subj)


def make_video_artefact(path: Path, dim=1280, seed=0, models=None, **pipe_kw):
    """A video-level artefact (export.configuration nested) on synthetic recordings: each
    subject a rest and a pain recording, a large subject offset, a class shift on
    ``INFORMATIVE``; the search space: baselines none/center, mean+std, logreg_l2."""
    import pandas as pd

    from neopain.deploy.videoexport import export_nested_model

    rng = np.random.default_rng(seed)
    X, rows = [], []
    for s in range(8):
        offset = rng.normal(scale=3.0, size=dim)
        for label in (0, 1):
            x = offset + rng.normal(size=(10, dim))
            x[:, INFORMATIVE[0]] += 2.0 * label
            X.append(x)
            rows += [(f"S{s:02d}_{label}", f"S{s:02d}", label)] * 10
    meta = pd.DataFrame(rows, columns=["video_id", "subject_id", "y"])
    spec = {"baselines": ["none", "center"], "poolings": {"mean_std": ["mean", "std"]},
            "selection": [{"selector": "all"}], "models": models or {"logreg_l2": {}},
            "ensembles": [], "inner_splits": 4}
    return export_nested_model({("mobilenet_v2", "penultimate"): (
        np.vstack(X).astype(np.float32), meta)}, spec, path,
        pipelines={"mobilenet_v2": pipeline_settings(dim, **pipe_kw)},
        provenance={"note": "synthetic"}, seed=seed)
