"""Metrics with known answers."""

import numpy as np
import pandas as pd
import pytest

from neopain.evaluate import binary_metrics, metrics_table, table5, to_markdown, video_level


def test_binary_metrics_known_values():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    score = np.array([0.9, 0.8, 0.4, 0.1, 0.2, 0.7, 0.3, 0.6])
    m = binary_metrics(y, pred, score)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)
    # pairs (pos, neg) correctly ordered: pos scores .9 .8 .4 .6 vs neg .1 .2 .7 .3
    assert m["auc"] == pytest.approx(14 / 16)


def test_single_class_auc_is_nan():
    m = binary_metrics(np.array([1, 1]), np.array([1, 0]), np.array([0.3, 0.2]))
    assert np.isnan(m["auc"]) and m["accuracy"] == 0.5


def _scores():
    rows = []
    for vid, subj, y, frame_scores in [("a", "A", 1, [0.9, 0.2, 0.8]), ("b", "B", 0, [0.1, 0.6]),
                                       ("c", "C", 1, [0.4, 0.45])]:
        for f, s in enumerate(frame_scores):
            rows.append(dict(backbone="m", layer="l", protocol="loso", fold=0, selector="su",
                             k=5, classifier="nb", video_id=vid, subject_id=subj, frame=f, y=y,
                             score=s, pred=int(s >= 0.5)))
    return pd.DataFrame(rows)


def test_video_level_mean_and_vote():
    v = video_level(_scores(), "mean").set_index("video_id")
    assert v.loc["a", "score"] == pytest.approx((0.9 + 0.2 + 0.8) / 3)
    assert v.loc["a", "pred"] == 1          # 2 of 3 frames positive
    assert v.loc["b", "pred"] == 1          # 1 of 2: tie goes positive
    assert v.loc["c", "pred"] == 0


def test_metrics_and_table5():
    m = metrics_table(_scores())
    assert set(m["level"]) == {"frame", "video"}
    frame = m[m.level == "frame"].iloc[0]
    assert frame["n"] == 7 and frame["accuracy"] == pytest.approx(3 / 7)
    t = table5(m)
    assert len(t) == 1 and t.iloc[0]["selector"] == "su(5)"
    md = to_markdown(t, "Table 5")
    assert "| m | l | loso | su(5) | nb |" in md
