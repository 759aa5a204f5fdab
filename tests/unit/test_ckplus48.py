"""The whole selection/classification/statistics stack on real data: ckplus48.

Negative vs positive expression (bench/ckplus48_task.py documents the task) on
981 crops of 118 subjects, 5-fold group_kfold by subject, ReliefF and SU x
k = 5/10/15 x the five classifiers of the paper preset, subject-bootstrap CIs.
About a minute on two cores (mostly the mobilenet_v2 features).
"""

import importlib.util

import numpy as np
import pytest

from _paths import REPO

TASK = REPO / "bench" / "ckplus48_task.py"


@pytest.fixture(scope="module")
def task(shared_data, ckplus48_mobilenet):
    spec = importlib.util.spec_from_file_location("ckplus48_task", TASK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    metrics, best, timings, _ = mod.run(shared_data, n_boot=1000, X=ckplus48_mobilenet[1])
    return mod, metrics, best


def test_every_configuration_at_both_levels(task):
    mod, metrics, _ = task
    n_cfg = len(mod.SELECTORS) * len(mod.KS) * len(mod.CLASSIFIERS)
    assert len(metrics) == 2 * n_cfg
    frame = metrics[metrics.level == "frame"]
    video = metrics[metrics.level == "video"]
    assert (frame["n"] == 981).all() and (frame["n_pos"] == 525).all()
    assert (video["n"] == 327).all()  # CK+ sequences
    assert (metrics["n_subjects"] == 118).all()
    assert set(metrics["classifier"]) == set(mod.CLASSIFIERS)
    assert set(metrics["k"]) == {5, 10, 15} and set(metrics["selector"]) == {"relieff", "su"}


def test_confidence_intervals_bracket_the_estimates(task):
    _, metrics, _ = task
    for m in ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        lo, est, hi = metrics[f"{m}_lo"], metrics[m], metrics[f"{m}_hi"]
        assert np.isfinite(lo).all() and np.isfinite(hi).all(), m
        assert ((lo <= est + 1e-12) & (est <= hi + 1e-12)).all(), m
        assert ((hi - lo) > 0).all() and ((hi - lo) < 0.4).all(), m


def test_deep_features_separate_the_task_well_above_chance(task):
    _, metrics, best = task
    assert list(best["selector"]) == ["relieff", "su"]
    assert (best["auc"] > 0.85).all() and (best["auc_lo"] > 0.75).all()
    assert (best["accuracy_lo"] > 0.7).all()
    # k matters: 15 features beat 5 for the best classifier of each selector
    frame = metrics[metrics.level == "frame"].set_index(["selector", "k", "classifier"])
    for _, r in best.iterrows():
        assert frame.loc[(r.selector, 15, r.classifier), "auc"] >= \
            frame.loc[(r.selector, 5, r.classifier), "auc"] - 0.02
