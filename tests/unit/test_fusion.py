"""Fusion of deep and strain features (neopain.learn.fusion) and Table 7: per-fold selection on
training subjects only, imputation, the score schema, DeLong p-values (the tiny
workflow run's table7 and report: tests/workflow/test_fusion_dag.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from neopain.learn.metrics import metrics_table
from neopain.learn.fusion import (FEATURE_SETS, FUSION_SCHEMA, fusion_scores, impute_from_training,
                            keyframe_strain, rank_strain, table7)
from neopain.learn.split import make_split


def synthetic(n_subj=12, per_video=4, deep_dim=40, seed=0, strain_signal=2.0,
              deep_signal=0.0):
    """Two videos (pain, no pain) per subject, ``per_video`` keyframes each; strain
    features per video (25, the first 3 informative), deep features per frame."""
    rng = np.random.default_rng(seed)
    rows, S_video = [], {}
    for i in range(n_subj):
        for y in (0, 1):
            vid = f"S{i:02d}_{y}"
            s = rng.normal(size=25)
            s[:3] += strain_signal * y
            S_video[vid] = s
            for f in range(per_video):
                rows.append({"video_id": vid, "subject_id": f"S{i:02d}", "frame": f, "y": y,
                             "label": "pain" if y else "no_pain"})
    meta = pd.DataFrame(rows)
    X = rng.normal(size=(len(meta), deep_dim)).astype(np.float32)
    X[:, :2] += deep_signal * meta["y"].to_numpy()[:, None]
    names = [f"f{j}" for j in range(25)]
    strain = pd.DataFrame([{"video_id": v, **dict(zip(names, s))} for v, s in S_video.items()])
    return X, meta, strain, names


def deep_rankings(split, dim=40, k=15):
    rows = []
    for fold in sorted(split["fold"].unique()):
        for r in range(k):
            rows.append({"protocol": split["protocol"].iloc[0], "fold": fold,
                         "selector": "su", "rank": r, "feature": (r * 7 + fold) % dim})
    return pd.DataFrame(rows)


def sheet(meta):
    return meta.drop_duplicates("video_id")[["video_id", "subject_id", "label"]]


@pytest.fixture(scope="module")
def data():
    X, meta, strain, names = synthetic()
    split = make_split(sheet(meta), "g", {"kind": "group_kfold", "n_splits": 4})
    S = keyframe_strain(meta, strain, names)
    return X, meta, split, S


def test_keyframes_get_their_videos_strain_features():
    X, meta, strain, names = synthetic(n_subj=2)
    S = keyframe_strain(meta, strain, names)
    assert S.shape == (len(meta), 25)
    row = strain.set_index("video_id").loc["S01_1", names].to_numpy()
    assert np.array_equal(S[meta.index[meta.video_id == "S01_1"]], np.tile(row, (4, 1)))
    with pytest.raises(ValueError, match=r"strain.parquet: no strain features for video\(s\) "
                                         r"\['S00_0'\]"):
        keyframe_strain(meta, strain[strain.video_id != "S00_0"], names, "strain.parquet")


def test_imputation_uses_training_videos_only():
    vids = np.array(["a", "a", "b", "c", "c", "d"], dtype=object)
    S = np.array([[1.0], [1.0], [3.0], [np.nan], [np.nan], [100.0]])
    train = np.array([True, True, True, False, False, False])
    out = impute_from_training(S, train, vids)
    # median over the training VIDEOS a, b (1, 3) = 2, not over rows (1, 1, 3) = 1,
    # and never the test video d's 100
    assert out[:, 0].tolist() == [1.0, 1.0, 3.0, 2.0, 2.0, 100.0]
    all_nan = np.full((4, 1), np.nan)
    assert impute_from_training(all_nan, np.array([True] * 4), vids[:4]).tolist() == [[0.0]] * 4


def test_strain_selection_sees_only_training_videos():
    X, meta, strain, names = synthetic(strain_signal=3.0)
    S = keyframe_strain(meta, strain, names)
    y = meta["y"].to_numpy()
    vids = meta["video_id"].to_numpy(dtype=object)
    train = meta["subject_id"].isin([f"S{i:02d}" for i in range(8)]).to_numpy()
    for sel in ("su", "relieff"):
        keep = rank_strain(S, y, train, vids, sel, {}, 5)
        assert len(keep) == 5 and {0, 1, 2} <= set(keep.tolist()), (sel, keep)
        # anything about the test rows (features, labels) changes nothing
        S2, y2 = S.copy(), y.copy()
        S2[~train] = np.random.default_rng(1).normal(size=S2[~train].shape) * 50
        y2[~train] = 1 - y2[~train]
        assert np.array_equal(rank_strain(S2, y2, train, vids, sel, {}, 5), keep)
    assert np.array_equal(rank_strain(S, y, train, vids, "su", {}, None), np.arange(25))


def test_fusion_scores_schema_feature_sets_and_signal(data):
    X, meta, split, S = data
    scores = fusion_scores(X, meta, split, deep_rankings(split), S, [5, 15], 5, "su", {},
                           {"nb": {}, "svm": {}}, seed=0, preset="paper")
    pa.Table.from_pandas(scores, FUSION_SCHEMA, preserve_index=False)  # fits the schema
    assert set(scores["features"]) == set(FEATURE_SETS)
    ks = scores.groupby("features")["k"].unique().apply(sorted).to_dict()
    assert ks == {"deep": [5, 15], "strain": [5], "fused": [10, 20]}
    # every frame tested exactly once per configuration, subjects disjoint per fold
    counts = scores.groupby(["features", "k", "classifier", "video_id", "frame"]).size()
    assert (counts == 1).all()
    for fold, part in scores.groupby("fold"):
        test_subj = set(split[(split.fold == fold) & (split.role == "test")].subject_id)
        assert set(part["subject_id"]) <= test_subj
    m = metrics_table(scores.assign(backbone="m", layer="l"), n_boot=0)
    auc = m[m.level == "frame"].groupby("features")["auc"].max()
    print("synthetic AUCs:", auc.round(3).to_dict())
    assert auc["strain"] > 0.8 and auc["fused"] > 0.75 and auc["deep"] < 0.75


def test_test_labels_never_reach_selection_or_models(data):
    """Flipping the labels of one fold's test subjects leaves that fold's scores as they
    are: neither the strain selector nor any classifier saw them."""
    X, meta, split, S = data
    args = (deep_rankings(split), S, [15], 5, "relieff", {"n_neighbors": 3},
            {"nb": {}, "knn": {}, "rf": {}})
    base = fusion_scores(X, meta, split, *args, seed=0)
    test_subj = set(split[(split.fold == 0) & (split.role == "test")].subject_id)
    flipped = meta.copy()
    rows = flipped["subject_id"].isin(test_subj)
    flipped.loc[rows, "y"] = 1 - flipped.loc[rows, "y"]
    again = fusion_scores(X, flipped, split, *args, seed=0)
    a, b = base[base.fold == 0], again[again.fold == 0]
    assert len(a) and np.array_equal(a["score"].to_numpy(), b["score"].to_numpy())
    assert (a["y"].to_numpy() != b["y"].to_numpy()).all()


def test_table7_rows_and_delong_p_values(data):
    X, meta, split, S = data
    scores = fusion_scores(X, meta, split, deep_rankings(split), S, [15], 5, "su", {},
                           {"nb": {}, "svm": {}}, seed=0, backbone="m", layer="l")
    assert (scores["backbone"] == "m").all() and (scores["layer"] == "l").all()
    metrics = metrics_table(scores, n_boot=50)
    t7, dl = table7(metrics, scores)
    assert t7["features"].tolist() == ["deep", "strain", "fused"]
    assert (t7["selector"].tolist()[1], t7["k"].tolist()[1]) == ("su", 5)
    assert np.isfinite(t7["frame_auc"]).all()
    p = t7.set_index("features")
    assert np.isnan(p.loc["deep", "p_vs_deep"]) and np.isnan(p.loc["fused", "p_vs_fused"])
    assert p.loc["deep", "p_vs_strain"] == p.loc["strain", "p_vs_deep"]
    assert p.loc["strain", "p_vs_fused"] == p.loc["fused", "p_vs_strain"]
    assert set(zip(dl["a"], dl["b"], dl["level"])) == {
        (a, b, lv) for a, b in (("strain", "deep"), ("strain", "fused"), ("deep", "fused"))
        for lv in ("frame", "video")}
    assert dl["p"].between(0, 1).all()
    # strain carries the signal and deep does not: the difference is significant
    assert p.loc["strain", "p_vs_deep"] < 0.01
