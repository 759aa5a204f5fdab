"""Export of the nested choice (video-level artefact): known-answer round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neopain.learn import videomodels as vm
from neopain.features.baseline import reference_stats
from neopain.deploy.arrays import ScoreModel
from neopain.deploy.exported import load
from neopain.deploy.videoexport import (VideoScorer, export_nested_model, serialise_video_model,
                                 window_scores)

SPEC = {"baselines": ["none", "center"], "poolings": {"mean_std": ["mean", "std"]},
        "selection": [{"selector": "all"}], "models": {"logreg_l2": {}, "linear_svm": {}},
        "ensembles": [], "inner_splits": 4}
PIPELINE = {"labels": ["no_pain", "pain"], "positive_label": "pain", "fps_for_images": 30.0,
            "track": {}, "crop": {}, "tracker_weights": {},
            "backbone": {"name": "fer", "layer": "conv_last", "weights_file": "w.h5",
                         "weights_sha256": "0" * 64}}


def synthetic_study(n_subjects=10, frames=20, dim=6, seed=0):
    """Each subject: a rest and a pain recording; a large random subject offset and a
    small shared class effect on feature 0 (subject centring is the known answer)."""
    rng = np.random.default_rng(seed)
    X, rows = [], []
    for s in range(n_subjects):
        offset = rng.normal(scale=5.0, size=dim)
        for y in (0, 1):
            F = offset + rng.normal(scale=0.3, size=(frames, dim))
            F[:, 0] += 0.6 * y
            X.append(F)
            rows += [(f"s{s}_v{y}", f"s{s}", y)] * frames
    meta = pd.DataFrame(rows, columns=["video_id", "subject_id", "y"])
    return np.vstack(X).astype(np.float32), meta


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    X, meta = synthetic_study()
    out = tmp_path_factory.mktemp("vx") / "model.neopain"
    res = export_nested_model({("fer", "conv_last"): (X, meta)}, SPEC, out,
                              pipelines={"fer": PIPELINE}, provenance={}, seed=0)
    return X, meta, out, res


def test_nested_export_chooses_the_known_answer_and_scores_like_sklearn(exported):
    X, meta, out, res = exported
    cand = res["candidate"]
    assert cand.baseline == "center" and res["inner_auc"] > 0.9
    table = res["search"]["candidates"]
    assert table.loc[table.baseline == "none", "inner_auc"].max() < 0.75
    m = load(out)
    assert m.level == "video" and m.manifest["format_version"] == 2
    assert m.info["video"]["stats"] == ["mean", "std"]
    # the NumPy scorer equals the fitted scikit-learn pipeline on the pooled vectors
    V = res["view"].X
    ours = m.video.score_vectors(V)
    ref = vm.positive_score(res["pipeline"], V)
    assert np.max(np.abs(ours - ref)) <= 1e-9
    assert np.max(np.abs(m.calibrator.apply(ours) - res["probability"])) <= 1e-9
    # a training recording scored from its frames, with its subject's baseline (all of
    # the subject's frames, as in training), gives the training score
    vid = "s3_v1"
    F = X[meta.video_id.to_numpy() == vid]
    Fs = X[meta.subject_id.to_numpy() == "s3"]
    i = int(np.flatnonzero(res["videos"]["video_id"].to_numpy() == vid)[0])
    assert m.video.score_frames(F, reference=Fs) == pytest.approx(res["raw"][i], abs=1e-9)
    with pytest.raises(ValueError, match="video-level model scores recordings"):
        m.score(F)


def test_baseline_from_a_separate_recording_vs_the_recording_itself(exported):
    """Documented difference (docs/export.md): with ``center``, the pooled mean block
    moves by median(baseline recording) - median(recording); std blocks are unchanged."""
    X, meta, out, _ = exported
    sc = load(out).video
    R = X[meta.video_id.to_numpy() == "s2_v1"]
    B = X[meta.video_id.to_numpy() == "s2_v0"]          # the same patient at rest
    own = sc.pool(sc.relative(R, sc.reference(R)))
    sep = sc.pool(sc.relative(R, sc.reference(B)))
    d = R.shape[1]
    np.testing.assert_allclose(own[:d] - sep[:d],
                               np.median(B, axis=0) - np.median(R, axis=0), atol=1e-5)
    np.testing.assert_allclose(own[d:], sep[d:], atol=1e-6)
    # the known answer: the pain recording against the rest baseline scores higher than
    # against itself (its own median removes the class shift)
    assert sc.score_frames(R, reference=B) > sc.score_frames(R)
    np.testing.assert_array_equal(reference_stats(R)[0], np.median(R.astype(float), axis=0))


def test_window_scores_pool_the_ok_frames_around_each_frame(exported):
    X, meta, out, _ = exported
    sc = load(out).video
    F = X[meta.video_id.to_numpy() == "s1_v1"].astype(np.float64)
    t = np.arange(len(F)) / 5.0                 # 5 fps
    ok = np.ones(len(F), bool)
    ok[7] = False
    rel = sc.relative(F, sc.reference(F[ok]))
    w = window_scores(sc, rel, t, ok, 1.0)      # +- 0.5 s: frames i-2 .. i+2
    assert np.isnan(w[7])
    keep = [j for j in range(8, 13) if ok[j]]
    assert w[10] == pytest.approx(sc.score_block(rel[keep]), abs=1e-12)


@pytest.mark.parametrize("model,selection", [("rf", {"selector": "all"}),
                                             ("logreg_enet", {"selector": "su", "k": 3}),
                                             ("linear_svm", {"selector": "all"})])
def test_every_video_model_serialises_without_pickles(model, selection):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 8))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 1]) + rng.normal(scale=0.5, size=60) > 0).astype(int)
    pipe = vm.fit(vm.make_model(model, {}, 0, selection["selector"], selection.get("k")),
                  X, y)
    spec, arrays = serialise_video_model(pipe)
    assert all(a.dtype != object for a in arrays.values())
    info = {"baseline": "none", "pooling": "p", "stats": ["mean"], "model": spec}
    Xt = rng.normal(size=(30, 8)) * 2
    Xt[0, 3] = np.nan
    got = VideoScorer(info, arrays).score_vectors(Xt)
    assert np.max(np.abs(got - vm.positive_score(pipe, Xt))) <= 1e-9
    assert isinstance(VideoScorer(info, arrays).model, ScoreModel)
