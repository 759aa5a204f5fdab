"""Nested model selection: no leakage, honest chance level, known lifts (neopain.learn.nested)."""

import numpy as np
import pandas as pd
import pytest

from neopain.learn import nested as ns
from neopain.learn.metrics import binary_metrics
from neopain.learn.split import fold_subjects, make_split
from neopain.report.summary import summary_table, to_markdown

MODELS = {"logreg_l2": {"C": [0.01, 1.0]}}


def offset_task(seed=0, n_subjects=16, dim=40, offset_sd=10.0, effect=1.0, frames=6):
    """Each subject: a large random offset on every feature; two rest and two pain videos
    whose frames differ by a small shared effect on 3 features."""
    rng = np.random.default_rng(seed)
    rows, X = [], []
    for s in range(n_subjects):
        off = rng.normal(0, offset_sd, dim)
        for v in range(4):
            y = v % 2
            centre = off + rng.normal(0, 0.3, dim)
            centre[:3] += effect * y
            for f in range(frames):
                X.append(centre + rng.normal(0, 0.5, dim))
                rows.append((f"s{s:02d}_v{v}", f"s{s:02d}", y, f))
    meta = pd.DataFrame(rows, columns=["video_id", "subject_id", "y", "frame"])
    return np.asarray(X, np.float32), meta


def loso(meta):
    samples = meta.drop_duplicates("video_id").assign(
        label=lambda d: np.where(d["y"] == 1, "pain", "no_pain"))
    return make_split(samples, "loso", {"kind": "loso"})


def run(tables, split, baselines=("none",), models=MODELS, ensembles=(), **kw):
    views = ns.build_views(tables, list(baselines), {"mean_std": ["mean", "std"]})
    cands = ns.candidates(views, [{"selector": "all"}], models)
    return ns.nested_cv(views, cands, split, inner_splits=3, seed=0, ensembles=ensembles,
                        **kw), views, cands


def auc(preds):
    return binary_metrics(preds["y"], preds["pred"], preds["score"])["auc"]


def test_subject_centring_lifts_auc_from_chance():
    X, meta = offset_task()
    split = loso(meta)
    tables = {("synthetic", "f"): (X, meta)}
    plain, _, _ = run(tables, split, ("none",))
    centred, _, _ = run(tables, split, ("center",))
    assert auc(plain["predictions"]) < 0.7, auc(plain["predictions"])
    assert auc(centred["predictions"]) > 0.9, auc(centred["predictions"])
    # searching both, the inner CV picks the baseline that works in every outer fold
    both, _, _ = run(tables, split, ("none", "center"))
    assert (both["choices"]["baseline"] == "center").all()
    assert auc(both["predictions"]) > 0.9


def test_nested_selection_never_sees_the_outer_test_subjects():
    X, meta = offset_task(n_subjects=8)
    samples = meta.drop_duplicates("video_id").assign(
        label=lambda d: np.where(d["y"] == 1, "pain", "no_pain"))
    split = make_split(samples, "g4", {"kind": "group_kfold", "n_splits": 4, "seed": 0})
    seen = []
    X2 = X + np.random.default_rng(5).normal(0, 1, X.shape).astype(np.float32)
    tables = {("a", "f"): (X, meta), ("b", "f"): (X2, meta)}
    res, _, cands = run(tables, split, ("none", "center"), ensembles=("mean", "stack"),
                        audit=lambda stage, fold, subjects: seen.append((stage, fold,
                                                                          subjects)))
    assert {s for s, _, _ in seen} == {"inner", "outer"}
    for fold in range(4):
        train, test = fold_subjects(split, fold)
        fits = [subj for _, f, subj in seen if f == fold]
        assert fits and all(not (subj & test) for subj in fits)
        assert all(subj <= train for subj in fits)
    # every outer test video scored once, by the fold that held its subject out
    p = res["predictions"]
    assert sorted(p["video_id"]) == sorted(meta["video_id"].unique())
    assert (res["choices"]["n_candidates"] == len(cands) + 2).all()  # + 2 ensembles


def test_same_inputs_and_seed_give_identical_tables():
    X, meta = offset_task(n_subjects=6)
    split = loso(meta)
    tables = {("s", "f"): (X, meta)}
    a, _, _ = run(tables, split, ("none", "center"))
    b, _, _ = run(tables, split, ("none", "center"))
    for k in ("scores", "choices", "predictions"):
        pd.testing.assert_frame_equal(a[k], b[k])


def test_summary_rows_and_labels():
    X, meta = offset_task(n_subjects=8)
    split = loso(meta)
    res, views, cands = run({("s", "f"): (X, meta)}, split, ("none", "center"))
    res["permuted"] = ns.nested_cv(ns.permute_labels(views, 0), cands, split, inner_splits=3,
                                   seed=0)["predictions"]
    table = summary_table({"loso": res}, None, n_boot=200)
    t = table.set_index("estimate")
    assert list(t.index) == ["nested", "best_of_n", "median", "permuted", "chance"]
    assert t.loc["best_of_n", "optimistic"] and not t.loc["nested", "optimistic"]
    assert t.loc["best_of_n", "auc"] >= t.loc["median", "auc"]
    assert t.loc["best_of_n", "n_configurations"] == len(cands) == 4
    assert t.loc["nested", "auc_lo"] <= t.loc["nested", "auc"] <= t.loc["nested", "auc_hi"]
    assert t.loc["chance", "accuracy"] == 0.5 and t.loc["chance", "auc"] == 0.5
    assert "baseline center" in t.loc["best_of_n", "configuration"]
    md = to_markdown(table, ["note"])
    assert "| nested |" in md and "OPTIMISTIC" in md
    from neopain.report.summary import summary_roc_curves

    curves = summary_roc_curves({"loso": res}, table)
    labels = [c[0] for c in curves]
    assert [lb.split(":")[0] for lb in labels] == ["loso nested", "loso best_of_n (optimistic)",
                                                  "loso median"]
    assert all("32 recordings, 16 positive" in lb for lb in labels)
    assert all("CI n/a (too few subjects)" in lb for lb in labels)  # 8 subjects < 10
    best = curves[1]
    assert binary_metrics(best[1], best[1], best[2])["auc"] == pytest.approx(
        t.loc["best_of_n", "auc"])


def test_permuted_search_in_a_second_process_gives_the_same_tables():
    X, meta = offset_task(n_subjects=8)
    split = loso(meta)
    views = ns.build_views({("s", "f"): (X, meta)}, ["none", "center"],
                           {"mean_std": ["mean", "std"]})
    cands = ns.candidates(views, [{"selector": "all"}], MODELS)
    kw = {"inner_splits": 3, "seed": 3}
    one = ns.nested_cv_and_permuted(views, cands, split, workers=1, **kw)
    two = ns.nested_cv_and_permuted(views, cands, split, workers=2, **kw)
    for k in ("scores", "choices", "predictions", "permuted"):
        pd.testing.assert_frame_equal(one[k], two[k])
    alone = ns.nested_cv(ns.permute_labels(views, 3), cands, split, **kw)["predictions"]
    pd.testing.assert_frame_equal(two["permuted"], alone)
    assert not two["permuted"]["y"].equals(two["predictions"]["y"])
    off = ns.nested_cv_and_permuted(views, cands, split, permutation=False, workers=2, **kw)
    assert off["permuted"].empty and list(off["permuted"]) == list(one["permuted"])
    pd.testing.assert_frame_equal(off["predictions"], one["predictions"])


def test_permuted_labels_give_chance_on_real_ckplus_features(ckplus48_mobilenet):
    """CK+ crops (118 subjects), negative vs positive expression: the true labels are
    learnt; with labels shuffled the whole nested path sits at chance."""
    meta, X = ckplus48_mobilenet
    samples = meta.drop_duplicates("video_id")
    split = make_split(samples, "g5", {"kind": "group_kfold", "n_splits": 5, "seed": 0})
    tables = {("mobilenet_v2", "penultimate"): (X, meta[["video_id", "subject_id", "y"]])}
    views = ns.build_views(tables, ["none", "center"], {"mean_std": ["mean", "std"]})
    cands = ns.candidates(views, [{"selector": "all"}], {"logreg_l2": {"C": [0.001, 0.01]}})
    true = ns.nested_cv(views, cands, split, inner_splits=3, seed=0)["predictions"]
    perm = ns.nested_cv(ns.permute_labels(views, 0), cands, split, inner_splits=3,
                        seed=0)["predictions"]
    assert auc(true) > 0.85, auc(true)
    assert 0.38 < auc(perm) < 0.62, auc(perm)
    with pytest.raises(AssertionError):  # the permutation really shuffled the labels
        np.testing.assert_array_equal(perm.sort_values("video_id")["y"],
                                      true.sort_values("video_id")["y"])


def test_frame_route_scores_videos_by_the_mean_of_their_frame_scores():
    X, meta = offset_task(n_subjects=6)
    split = loso(meta)
    views = ns.build_views({("s", "f"): (X, meta)}, ["center"],
                           {ns.FRAME_SCORES: ["mean"], "mean_std": ["mean", "std"]})
    frame_view = views[("s", "f", "center", ns.FRAME_SCORES)]
    assert len(frame_view.X) == len(meta)                  # rows are frames
    assert len(views[("s", "f", "center", "mean_std")].X) == meta["video_id"].nunique()
    cands = ns.candidates(views, [{"selector": "all"}], {"logreg_l2": {"C": [0.1]}})
    fit = ns.Fitter(seed=0)
    c = [c for c in cands if c.pooling == ns.FRAME_SCORES][0]
    train, test = fold_subjects(split, 0)
    vids, s, _ = fit(c, frame_view, train, test)
    # by hand: the same model on the training frames, mean of each test video's frames
    from neopain.learn import videomodels as vm

    tr = meta["subject_id"].isin(train).to_numpy()
    te = meta["subject_id"].isin(test).to_numpy()
    model = vm.fit(vm.make_model("logreg_l2", {"C": 0.1}), frame_view.X[tr], meta["y"][tr])
    by_hand = pd.Series(vm.positive_score(model, frame_view.X[te])).groupby(
        meta.loc[te, "video_id"].to_numpy()).mean()
    np.testing.assert_allclose(s, by_hand.loc[frame_view.videos["video_id"].iloc[vids]],
                               rtol=1e-6)
