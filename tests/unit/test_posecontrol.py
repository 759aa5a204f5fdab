"""Head pose as a control (neopain.learn.posecontrol): pose regression inside every fit of the
nested search and of select/classify, fitted on training subjects only."""

import numpy as np
import pandas as pd
import pytest

from neopain.learn import nested as ns
from neopain.features import pose
from neopain.learn import posecontrol as pc
from neopain.learn.classify import score_folds
from neopain.learn.metrics import binary_metrics
from neopain.learn.select import rank_folds_array
from neopain.learn.split import fold_subjects, make_split

MODELS = {"logreg_l2": {"C": [1.0]}}


def pose_task(seed=0, n_subjects=14, dim=8, via_pose=True, effect=0.0, frames=8):
    """Frames of 2 rest + 2 pain videos per subject. Head pose (degrees) changes every
    descriptor linearly (a head turn moves mesh distances); with ``via_pose`` the pain
    videos turn the head by 30 degrees of yaw more (the label reaches the descriptors only
    through pose); ``effect`` adds a real action effect on 3 descriptors, pose-free."""
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 1, (3, dim))
    rows, X, P = [], [], []
    for s in range(n_subjects):
        for v in range(4):
            y = v % 2
            head = rng.normal(0, 8, 3) + (np.array([30.0, 0, 0]) * y if via_pose else 0)
            act = rng.normal(0, 0.2, dim)
            act[:3] += effect * y
            for f in range(frames):
                p = head + rng.normal(0, 3, 3)
                X.append(act + (p / 30.0) @ A + rng.normal(0, 0.3, dim))
                P.append(p)
                rows.append((f"s{s:02d}_v{v}", f"s{s:02d}", y, f))
    meta = pd.DataFrame(rows, columns=["video_id", "subject_id", "y", "frame"])
    return np.asarray(X, np.float32), meta, np.asarray(P)


def loso(meta):
    samples = meta.drop_duplicates("video_id").assign(
        label=lambda d: np.where(d["y"] == 1, "pain", "no_pain"))
    return make_split(samples, "loso", {"kind": "loso"})


def nested_auc(X, meta, P, pose_regression, pooling=("mean", "std"), audit=None):
    views = ns.build_views({("actions", "frame"): (X, meta, P)}, ["none"],
                           {"p": list(pooling)})
    cands = ns.candidates(views, [{"selector": "all"}], MODELS)
    res = ns.nested_cv(views, cands, loso(meta), inner_splits=3, seed=0,
                       pose_regression=pose_regression, audit=audit)
    p = res["predictions"]
    return binary_metrics(p["y"], p["pred"], p["score"])["auc"], res


def test_pose_regression_removes_a_label_carried_only_by_pose():
    X, meta, P = pose_task(via_pose=True)
    plain, _ = nested_auc(X, meta, P, False)
    regressed, _ = nested_auc(X, meta, P, True)
    # without pose regression the descriptors "detect" the head turn
    assert plain > 0.9, plain
    assert 0.3 < regressed < 0.7, regressed
    # the pose-only table shows the same: pose alone carries the label
    pose_only, _ = nested_auc(P.astype(np.float32), meta, None, False)
    assert pose_only > 0.9


@pytest.mark.parametrize("pooling", [("mean", "std"), ("frame_scores",)])
def test_pose_regression_keeps_a_real_action_effect(pooling):
    """Pose independent of the label, a real effect on 3 descriptors: kept (and the pose
    noise removed), at video rows (pooled pose, linear) and frame rows (quadratic)."""
    X, meta, P = pose_task(via_pose=False, effect=1.0, seed=1)
    pool = {"frame_scores": "frame_scores"}.get(pooling[0])
    if pool:  # the frame route is a pooling name of its own
        views = ns.build_views({("actions", "frame"): (X, meta, P)}, ["none"],
                               {"frame_scores": []})
        cands = ns.candidates(views, [{"selector": "all"}], MODELS)
        aucs = []
        for flag in (False, True):
            p = ns.nested_cv(views, cands, loso(meta), inner_splits=3, seed=0,
                             pose_regression=flag)["predictions"]
            aucs.append(binary_metrics(p["y"], p["pred"], p["score"])["auc"])
        plain, regressed = aucs
    else:
        plain, _ = nested_auc(X, meta, P, False, pooling)
        regressed, _ = nested_auc(X, meta, P, True, pooling)
    assert regressed > 0.85 and regressed >= plain - 0.05, (plain, regressed)


def test_pose_fits_never_see_the_outer_test_subjects():
    X, meta, P = pose_task(n_subjects=8, frames=4)
    seen = []
    split = loso(meta)
    _, res = nested_auc(X, meta, P, True,
                        audit=lambda stage, fold, subj: seen.append((stage, fold, subj)))
    assert {s for s, _, _ in seen} == {"pose", "inner", "outer"}
    for fold in split["fold"].unique():
        train, test = fold_subjects(split, fold)
        fits = [subj for st, f, subj in seen if f == fold and st == "pose"]
        assert fits and all(not (subj & test) and subj <= train for subj in fits)


def test_paper_path_select_and_classify_regress_pose_per_fold(monkeypatch):
    X, meta, P = pose_task(n_subjects=10, frames=4)
    split = loso(meta)
    fitted = []
    real = pc.residualize

    def spy(X_, P_, train, degree=None):
        fitted.append(set(meta["subject_id"].to_numpy()[train]))
        return real(X_, P_, train, degree)

    monkeypatch.setattr(pc, "residualize", spy)
    aucs = {}
    for pose in (None, P):
        fitted.clear()
        ranks = rank_folds_array(X, meta["subject_id"].to_numpy(), meta["y"].to_numpy(),
                                 split, "su", {}, 8, pose=pose).to_pandas()
        s = score_folds(X, meta, split, ranks, [8], {"svm": {}}, pose=pose)
        v = s.groupby("video_id").agg(y=("y", "first"), score=("score", "mean"))
        aucs[pose is None] = binary_metrics(v["y"], (v["score"] > 0.5).astype(int),
                                            v["score"])["auc"]
        if pose is not None:  # one fit in select, one in classify, per fold
            assert len(fitted) == 2 * split["fold"].nunique()
            for fold, subj in zip(list(range(split["fold"].nunique())) * 2, fitted):
                train, test = fold_subjects(split, sorted(split["fold"].unique())[fold])
                assert subj == set(train) and not subj & set(test)
    assert aucs[True] > 0.85 and 0.25 < aucs[False] < 0.75, aucs


def test_residualize_known_answer_and_pose_statistics():
    rng = np.random.default_rng(2)
    P = rng.uniform(-30, 30, (200, 3))
    signal = rng.normal(size=200)
    X = np.column_stack([signal + P @ [0.1, -0.05, 0.02], 2 + 0.3 * P[:, 0]])
    train = np.arange(200) < 150
    R = pc.residualize(X, P, train, degree=1)
    assert np.allclose(R[:, 1], X[train, 1].mean())     # all pose: nothing left
    assert np.corrcoef(R[:, 0], signal)[0, 1] > 0.98            # the signal stays
    assert np.abs(np.corrcoef(np.column_stack([R[:, 0], P]).T)[0, 1:]).max() < 0.05
    # test rows (not in ``train``) never change the fit
    X2 = X.copy()
    X2[~train] *= 100
    assert np.allclose(pc.residualize(X2, P, train, 1)[train], R[train])
    st = pose.pose_statistics(np.array([[0, 10, -5], [10, 10, 5], [np.nan, 0, 0]]))
    assert st.tolist() == pytest.approx([5, 5, 1, 9, 10, 0, 10, 10, 0, 5, -4, 4])
    assert pose.pose_names()[:2] == ["yaw__mean", "yaw__std"] and len(pose.pose_names()) == 12
    assert np.isnan(pose.pose_statistics(np.zeros((0, 3)))).all()


def test_a_table_without_pose_is_refused_by_name():
    import pyarrow as pa

    from neopain.features.tables import fixed_size_list

    t = pa.table({"subject_id": ["a"], "features": fixed_size_list(np.zeros((1, 2), np.float32))}
                 ).replace_schema_metadata({b"neopain.backbone": b"fer",
                                            b"neopain.layer": b"conv_last"})
    with pytest.raises(ValueError, match="fer/conv_last feature table has no pose"):
        pc.table_pose(t)
