"""Subject baselines, video pooling and the whole-feature video models (known answers)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from neopain.features import baseline as bl
from neopain.learn import videomodels as vm
from neopain.learn.pooling import pool_videos
from neopain.features.tables import feature_matrix, fixed_size_list


def _table(X, subjects, y):
    return pa.table({"subject_id": pa.array(subjects, pa.string()),
                     "y": pa.array(y, pa.int8()),
                     "features": fixed_size_list(X.astype(np.float32))})


def test_center_and_standardize_per_subject_known_answer():
    X = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0],    # subject a: median (3, 10)
                  [0.0, -2.0], [10.0, 2.0]])                 # subject b: median (5, 0)
    subj = ["a", "a", "a", "b", "b"]
    c = bl.subject_baseline(X, subj, "center")
    np.testing.assert_array_equal(c, [[-2, 0], [0, 0], [2, 0], [-5, -2], [5, 2]])
    z = bl.subject_baseline(X, subj, "standardize")
    # a: MAD of (1, 3, 5) = 2 -> scale 2.9652; the constant column (MAD 0) is only centred
    np.testing.assert_allclose(z[:3, 0], np.array([-2, 0, 2]) / (2 * bl.MAD_SCALE))
    np.testing.assert_array_equal(z[:3, 1], 0.0)
    np.testing.assert_allclose(z[3:, 0], np.array([-5, 5]) / (5 * bl.MAD_SCALE))
    assert bl.subject_baseline(X, subj, "none") is X
    with pytest.raises(ValueError, match="unknown subject baseline 'mean'"):
        bl.subject_baseline(X, subj, "mean")
    with pytest.raises(ValueError, match="4 subject ids for 5 rows"):
        bl.subject_baseline(X, subj[:4], "center")


@pytest.mark.parametrize("method", ["center", "standardize"])
def test_baselines_use_no_labels(method):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    subj = np.repeat(["s1", "s2", "s3"], 20)
    y = rng.integers(0, 2, 60)
    a = feature_matrix(_table(X, subj, y), method)
    b = feature_matrix(_table(X, subj, 1 - y), method)        # every label flipped
    c = feature_matrix(_table(X, subj, np.zeros(60, int)), method)
    assert a.tobytes() == b.tobytes() == c.tobytes()
    assert not np.array_equal(a, X)


def test_single_recording_subjects():
    assert bl.single_recording_subjects(["a", "a", "b", "c", "c"],
                                        ["v1", "v2", "v3", "v4", "v4"]) == ["b", "c"]


def test_pooling_known_answer_and_mixed_labels_refused():
    X = np.array([[1.0, 0.0], [3.0, 2.0], [np.nan, 4.0], [10.0, 10.0]])
    meta = pd.DataFrame({"video_id": ["v1", "v1", "v1", "v0"], "subject_id": "s",
                         "y": [1, 1, 1, 0]})
    V, vmeta = pool_videos(X, meta, ["mean", "std", "q50", "max"])
    assert list(vmeta["video_id"]) == ["v0", "v1"] and list(vmeta["n_frames"]) == [1, 3]
    np.testing.assert_allclose(V[1], [2, 2, 1, np.sqrt(8 / 3), 2, 2, 3, 4])  # NaN ignored
    np.testing.assert_allclose(V[0], [10, 10, 0, 0, 10, 10, 10, 10])
    with pytest.raises(ValueError, match="unknown pooling statistic 'q100'"):
        pool_videos(X, meta, ["q100"])
    meta.loc[1, "y"] = 0
    with pytest.raises(ValueError, match="video 'v1' has frames of both labels"):
        pool_videos(X, meta, ["mean"])


@pytest.mark.parametrize("model", ["logreg_l2", "linear_svm"])
def test_row_space_fit_equals_the_full_fit(model):
    """p >> n: fitting in the span of the training rows gives the same decision function."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 1500))
    y = (rng.random(80) < 0.5).astype(int)
    X[y == 1, :30] += 0.5
    Xte = rng.normal(size=(20, 1500))
    params = {"C": 0.01}
    full = vm.positive_score(vm.fit(vm.make_model(model, params), X, y), Xte)
    Ztr, Zte = vm.project(X, y, Xte)
    assert Ztr.shape[1] < 80
    fast = vm.positive_score(vm.fit(vm.make_classifier(model, params), Ztr, y), Zte)
    np.testing.assert_allclose(fast, full, rtol=1e-3, atol=1e-3 * np.abs(full).max())


def test_grid_points_order():
    assert vm.grid_points({"C": [1, 2], "l1_ratio": [0.1, 0.9]}) == [
        {"C": 1, "l1_ratio": 0.1}, {"C": 1, "l1_ratio": 0.9},
        {"C": 2, "l1_ratio": 0.1}, {"C": 2, "l1_ratio": 0.9}]
    with pytest.raises(ValueError, match="unknown video model 'xgb'"):
        vm.make_model("xgb")
