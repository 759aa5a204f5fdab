"""Subject-disjoint protocols."""

import pandas as pd
import pytest

from neopain.learn.split import LeakageError, check_disjoint, make_split


def samples(n_subjects=8):
    rows = []
    for s in range(n_subjects):
        label = "pain" if s % 2 else "no_pain"
        for v in range(2):
            rows.append({"video_id": f"s{s}v{v}", "subject_id": f"S{s}", "label": label})
    return pd.DataFrame(rows)


def test_holdout_is_disjoint_stratified_and_seeded():
    df = samples(8)
    a = make_split(df, "holdout", {"kind": "holdout", "test_fraction": 0.5, "seed": 1})
    b = make_split(df, "holdout", {"kind": "holdout", "test_fraction": 0.5, "seed": 1})
    pd.testing.assert_frame_equal(a, b)
    test = set(a.loc[a.role == "test", "subject_id"])
    assert len(test) == 4
    labels = df.drop_duplicates("subject_id").set_index("subject_id")["label"]
    assert sorted(labels[list(test)]) == ["no_pain", "no_pain", "pain", "pain"]
    c = make_split(df, "holdout", {"kind": "holdout", "test_fraction": 0.5, "seed": 2})


def test_loso_tests_each_subject_once():
    df = samples(5)
    s = make_split(df, "loso", {"kind": "loso"})
    tests = s[s.role == "test"]
    assert sorted(tests.subject_id) == sorted(df.subject_id.unique())
    assert tests.groupby("fold").size().eq(1).all()


def test_group_kfold():
    s = make_split(samples(10), "g", {"kind": "group_kfold", "n_splits": 5, "seed": 0})
    tests = s[s.role == "test"]
    assert tests.subject_id.is_unique and tests.subject_id.nunique() == 10
    assert s.fold.nunique() == 5


def test_subject_on_both_sides_is_refused():
    bad = pd.DataFrame({"protocol": ["p", "p", "p"], "fold": [0, 0, 0],
                        "subject_id": ["A", "A", "B"], "role": ["train", "test", "train"]})
    with pytest.raises(LeakageError, match="subject 'A' is in both train and test"):
        check_disjoint(bad)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'bogus'"):
        make_split(samples(4), "x", {"kind": "bogus"})


def test_iter_folds_masks_rows_by_their_subject():
    from neopain.learn.split import fold_subjects, iter_folds

    df = samples(4)
    split = make_split(df, "loso", {"kind": "loso"})
    subjects = df["subject_id"].to_numpy()
    seen = []
    for fold, train, test in iter_folds(split, subjects):
        train_s, test_s = fold_subjects(split, fold)
        assert set(subjects[train]) == train_s and set(subjects[test]) == test_s
        assert not (train & test).any()
        seen.append(fold)
    assert seen == sorted(split["fold"].unique())
    # a subject the split does not list is neither training nor test data
    _, train, test = next(iter_folds(split, ["nobody"]))
    assert not train[0] and not test[0]
