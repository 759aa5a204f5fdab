"""Classifier presets, AUC scores, nested subject-grouped search, and leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC

from neopain.learn import classify
from neopain.learn.classify import (CLASSIFIERS, cross_validate, make_pipeline, make_search,
                              positive_score, score_folds)
from neopain.learn.relieff import ReliefF
from neopain.learn.select import rank_folds_array
from neopain.learn.su import SymmetricUncertainty
from neopain.learn.split import LeakageError, make_split


def frames(n_subjects=20, per=8, p=12, signal=0.6, seed=0):
    """Frames of subjects with one label each; column 0 weakly informative."""
    rng = np.random.default_rng(seed)
    rows, X = [], []
    for s in range(n_subjects):
        y = s % 2
        for f in range(per):
            rows.append({"video_id": f"s{s}", "subject_id": f"S{s:02d}", "frame": f, "y": y,
                         "label": "pain" if y else "no_pain"})
            x = rng.normal(size=p)
            x[0] += signal * y
            X.append(x)
    return np.array(X), pd.DataFrame(rows)


def test_presets_build_weka_like_pipelines():
    paper = {n: make_pipeline(n, {}, preset="paper", n_features=10) for n in CLASSIFIERS}
    assert [s for s, _ in paper["nb"].steps] == ["clf"]
    assert isinstance(paper["knn"][0], MinMaxScaler) and paper["knn"][-1].n_neighbors == 1
    svm = paper["svm"][-1]
    assert isinstance(paper["svm"][0], MinMaxScaler)
    assert (svm.kernel, svm.C) == ("linear", 1.0)
    assert svm.probability in (False, "deprecated")  # never Platt scaling
    assert (paper["svm_rbf"][-1].kernel, paper["svm_rbf"][-1].gamma) == ("rbf", 0.01)
    rf = paper["rf"][-1]
    assert rf.n_estimators == 100 and rf.max_features == int(np.log2(10) + 1)
    default = {n: make_pipeline(n, {}, preset="default") for n in CLASSIFIERS}
    assert all(isinstance(p[0], StandardScaler) for p in default.values())
    assert default["svm_rbf"][-1].gamma == "scale"
    assert make_pipeline("knn", {"n_neighbors": 3}, preset="paper")[-1].n_neighbors == 3
    with pytest.raises(ValueError, match="unknown classifier 'lr'"):
        make_pipeline("lr", {})
    with pytest.raises(ValueError, match="unknown classifier preset 'weka'"):
        make_pipeline("nb", {}, preset="weka")


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("preset", ["paper", "default"])
def test_positive_scores_rank_the_positive_class(name, preset):
    X, meta = frames(n_subjects=12, per=10, p=4, signal=2.5)
    y = meta["y"].to_numpy()
    model = make_pipeline(name, {"n_neighbors": 5} if name == "knn" else {}, preset=preset,
                          n_features=4).fit(X, y)
    s = positive_score(model, X)
    assert s.shape == (len(X),) and np.isfinite(s).all()
    assert roc_auc_score(y, s) > 0.8
    if isinstance(model[-1], SVC):
        np.testing.assert_array_equal(s, model.decision_function(X))
    # labels flipped: the score still points at y == 1
    model2 = make_pipeline(name, {"n_neighbors": 5} if name == "knn" else {}, preset=preset,
                           n_features=4).fit(X, 1 - y)
    assert roc_auc_score(1 - y, positive_score(model2, X)) > 0.8


def test_nested_search_folds_are_grouped_by_training_subject():
    X, meta = frames(n_subjects=12, per=6, p=5, signal=1.5)
    y, groups = meta["y"].to_numpy(), meta["subject_id"].to_numpy()
    gs = make_search(make_pipeline("svm", {}, preset="paper"), "svm",
                     {"n_splits": 3, "grids": {"svm": {"C": [0.1, 1.0]}}}, groups, y, 0)
    for tr, te in gs.cv.split(X, y, groups):
        assert not set(groups[tr]) & set(groups[te])
    gs.fit(X, y, groups=groups)
    assert gs.best_params_["clf__C"] in (0.1, 1.0)
    # too few subjects per class for inner folds: no search
    few = np.array(["a", "a", "b", "b"])
    assert make_search(make_pipeline("svm", {}), "svm", {"n_splits": 3}, few,
                       np.array([0, 0, 1, 1]), 0) is None


def test_score_folds_with_search_records_choice_and_only_trains_on_train(monkeypatch):
    X, meta = frames(n_subjects=16, per=5, p=6, signal=1.5)
    split = make_split(meta, "hold", {"kind": "holdout", "test_fraction": 0.5, "seed": 0})
    seen = []
    real_make_search = classify.make_search

    def spy(pipe, name, search, groups, y, seed):
        seen.append(set(groups))
        return real_make_search(pipe, name, search, groups, y, seed)

    monkeypatch.setattr(classify, "make_search", spy)
    out = cross_validate(X, meta, split, {"relieff": {}}, [3], {"knn": {}, "svm": {}},
                         preset="paper", search={"enabled": True, "n_splits": 2,
                                                 "grids": {"knn": {"n_neighbors": [1, 3]}}})
    train = set(split[split.role == "train"].subject_id)
    test = set(split[split.role == "test"].subject_id)
    assert seen and all(s == train for s in seen)
    assert set(out.subject_id) == test
    chosen = out.groupby("classifier")["params"].first()
    assert json.loads(chosen["knn"])["n_neighbors"] in (1, 3)
    assert "C" in json.loads(chosen["svm"])  # default grid


# ----------------------------------------------------------------------------
# leakage
# ----------------------------------------------------------------------------
def leak_data():
    """Holdout split; column LEAK encodes subject identity x label on the test subjects
    only (constant 0 on training subjects)."""
    X, meta = frames(n_subjects=24, per=6, p=10, signal=0.4, seed=5)
    split = make_split(meta, "holdout", {"kind": "holdout", "test_fraction": 0.5, "seed": 3})
    test = meta.subject_id.isin(split[split.role == "test"].subject_id).to_numpy()
    sid = meta.subject_id.str[1:].astype(int).to_numpy()
    leak = np.where(test, 10.0 * meta.y.to_numpy() + 0.01 * sid, 0.0)
    return np.column_stack([X, leak]), meta, split, test


def test_leaky_feature_on_test_subjects_cannot_raise_test_auc():
    X, meta, split, test = leak_data()
    clean = X.copy()
    clean[:, -1] = 0.0  # the same column without the leak
    selectors, ks = {"relieff": {}, "su": {}}, [3, 5]
    clfs = {n: {} for n in CLASSIFIERS}
    for preset in ("paper", "default"):
        leaky_run = cross_validate(X, meta, split, selectors, ks, clfs, preset=preset)
        clean_run = cross_validate(clean, meta, split, selectors, ks, clfs, preset=preset)
        assert set(leaky_run.subject_id) <= set(split[split.role == "test"].subject_id)
        for key, part in leaky_run.groupby(["selector", "k", "classifier"]):
            ref = clean_run.set_index(["selector", "k", "classifier"]).loc[key]
            np.testing.assert_array_equal(part["score"].to_numpy(), ref["score"].to_numpy())
            assert roc_auc_score(part.y, part.score) == roc_auc_score(ref.y, ref.score)
    # the selectors fitted on training rows never rank the leak column
    ranks = rank_folds_array(X, meta.subject_id.to_numpy(), meta.y.to_numpy(), split,
                             "relieff", {}, 5)
    assert X.shape[1] - 1 not in ranks.column("feature").to_pylist()


def test_leak_column_would_be_chosen_by_a_selector_seeing_test_rows():
    """Positive control of the test above: fitted on all rows, the selector ranks the
    leak column first, so the bit-identical comparison would fail."""
    X, meta, split, test = leak_data()
    assert ReliefF(n_features_to_select=3).fit(X, meta.y.to_numpy()).ranking_[0] == X.shape[1] - 1


def noise_subjects(seed, n_subjects=30, per=4, p=300):
    """Pure noise with a subject effect: nothing predicts the label."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(size=(n_subjects, p))
    rows, X = [], []
    for s in range(n_subjects):
        for f in range(per):
            rows.append({"video_id": f"s{s}", "subject_id": f"S{s:02d}", "frame": f,
                         "y": s % 2, "label": "pain" if s % 2 else "no_pain"})
            X.append(effect[s] + 0.3 * rng.normal(size=p))
    return np.array(X), pd.DataFrame(rows)


def test_selection_inside_folds_has_no_selection_bias():
    """Ambroise & McLachlan (2002): selecting on all rows before cross-validation finds
    signal in pure noise; selecting inside each fold (what the pipeline does) does not.
    Deterministic seeds; means over 3 data sets x 2 selectors."""
    honest, leaky = [], []
    for seed in range(3):
        X, meta = noise_subjects(seed)
        y = meta.y.to_numpy()
        split = make_split(meta, "g", {"kind": "group_kfold", "n_splits": 5, "seed": 0})
        for name, cls in (("relieff", ReliefF), ("su", SymmetricUncertainty)):
            run = cross_validate(X, meta, split, {name: {}}, [5], {"nb": {}}, preset="default")
            honest.append(roc_auc_score(run.y, run.score))
            top = cls(n_features_to_select=5).fit(X, y).ranking_[:5]  # all rows: leak
            ranks = pd.DataFrame([{"protocol": "g", "fold": f, "selector": name, "rank": r,
                                   "feature": int(t)} for f in range(5)
                                  for r, t in enumerate(top)])
            run = score_folds(X, meta, split, ranks, [5], {"nb": {}}, preset="default")
            leaky.append(roc_auc_score(run.y, run.score))
    assert np.mean(leaky) > 0.75 and np.mean(honest) < 0.65
    assert np.mean(leaky) - np.mean(honest) > 0.15


def test_split_with_a_subject_on_both_sides_is_refused():
    X, meta = frames(n_subjects=6, per=2, p=3)
    split = make_split(meta, "hold", {"kind": "holdout", "seed": 0})
    bad = pd.concat([split, pd.DataFrame([{"protocol": "hold", "fold": 0,
                                           "subject_id": split.subject_id.iloc[0],
                                           "role": "test" if split.role.iloc[0] == "train"
                                           else "train"}])], ignore_index=True)
    with pytest.raises(LeakageError, match="both train and test"):
        rank_folds_array(X, meta.subject_id.to_numpy(), meta.y.to_numpy(), bad, "su", {}, 3)
    ranks = rank_folds_array(X, meta.subject_id.to_numpy(), meta.y.to_numpy(), split, "su",
                             {}, 3).to_pandas()
    with pytest.raises(LeakageError, match="both train and test"):
        score_folds(X, meta, bad, ranks, [3], {"nb": {}})
