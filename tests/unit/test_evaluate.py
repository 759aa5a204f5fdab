"""Metrics with known answers."""

import numpy as np
from sklearn.metrics import roc_auc_score
import pandas as pd
import pytest

from neopain.learn.evaluate import table5, with_selector_label
from neopain.learn.metrics import binary_metrics, metrics_table, video_level
from neopain.report.markdown import to_markdown


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
    assert len(t) == 1 and (t.iloc[0]["selector"], t.iloc[0]["k"]) == ("su", 5)
    md = to_markdown(with_selector_label(t), "Table 5")
    assert "| m | l | loso | su(5) | nb |" in md


# ----------------------------------------------------------------------------
# video aggregation, bootstrap CIs, DeLong, tables, figures
# ----------------------------------------------------------------------------
from neopain.learn.delong import delong_test  # noqa: E402
from neopain.learn.evaluate import delong_table, table6, table7  # noqa: E402
from neopain.learn.metrics import bootstrap_ci, bootstrap_replicates  # noqa: E402
from neopain.learn.roc import plot_roc  # noqa: E402
from neopain.report.markdown import with_ci_columns  # noqa: E402


def test_video_level_top_quantile():
    v = video_level(_scores(), "quantile", 0.9).set_index("video_id")
    assert v.loc["a", "score"] == pytest.approx(np.quantile([0.9, 0.2, 0.8], 0.9))
    assert v.loc["b", "score"] == pytest.approx(np.quantile([0.1, 0.6], 0.9))
    with pytest.raises(ValueError, match="unknown video_aggregation 'top'"):
        video_level(_scores(), "top")


def clustered(n_subj=30, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    subj = np.repeat([f"S{i:02d}" for i in range(n_subj)], rng.integers(3, 12, n_subj))
    y = rng.integers(0, 2, subj.size)
    s = shift * y + rng.normal(size=subj.size)
    return y, (s > 0.5).astype(int), s, subj


def test_bootstrap_replicates_equal_a_loop_over_resampled_subjects():
    y, pred, s, subj = clustered()
    s = np.round(s, 1)  # ties in the scores
    reps = bootstrap_replicates(y, pred, s, subj, n_boot=50, seed=7)
    uniq, sidx = np.unique(subj, return_inverse=True)
    draws = np.random.default_rng(7).integers(0, uniq.size, size=(50, uniq.size))
    for b in range(50):
        rows = np.concatenate([np.flatnonzero(sidx == j) for j in draws[b]])
        m = binary_metrics(y[rows], pred[rows], s[rows])
        for name in ("accuracy", "auc", "sensitivity", "specificity", "balanced_accuracy",
                     "f1"):
            assert reps[name][b] == pytest.approx(m[name], abs=1e-12), (name, b)


def test_bootstrap_ci_is_seeded_and_covers_the_estimate():
    y, pred, s, subj = clustered(seed=1)
    a = bootstrap_ci(y, pred, s, subj, n_boot=1000, seed=3)
    assert a == bootstrap_ci(y, pred, s, subj, n_boot=1000, seed=3)
    m = binary_metrics(y, pred, s)
    for name, (lo, hi) in a.items():
        assert lo <= m[name] <= hi and hi - lo < 0.5, name
    # subjects, not frames, are resampled: one subject -> a degenerate interval
    one = bootstrap_ci(y[subj == "S00"], pred[subj == "S00"], s[subj == "S00"],
                       subj[subj == "S00"], n_boot=100)
    assert one["accuracy"][0] == one["accuracy"][1]


def delong_plain(y, a, b):
    """DeLong et al. (1988) written out: placement values by pairwise comparison."""
    y = np.asarray(y)
    out = []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = out
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    S = s10 / m + s01 / n
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    z = (auc_a - auc_b) / np.sqrt(var)
    from scipy.stats import norm

    return auc_a, auc_b, z, 2 * norm.sf(abs(z))


def test_delong_matches_plain_implementation_with_ties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 150)
    a = np.round(y + rng.normal(size=150), 1)
    b = np.round(0.5 * y + rng.normal(size=150) + 0.3 * a, 1)
    got = delong_test(y, a, b)
    auc_a, auc_b, z, p = delong_plain(y, a, b)
    assert got["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert got["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert got["z"] == pytest.approx(z, rel=1e-9) and got["p"] == pytest.approx(p, rel=1e-9)
    same = delong_test(y, a, a)
    assert same["diff"] == 0 and same["p"] == 1.0


def test_delong_agrees_with_a_paired_bootstrap():
    """Independent check: the paired bootstrap SE of the AUC difference and its
    normal p-value agree with DeLong's (n = 400, 4000 replicates)."""
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 2, n)
    common = rng.normal(size=n)
    a = 1.0 * y + common + 0.7 * rng.normal(size=n)
    b = 0.75 * y + common + 0.7 * rng.normal(size=n)
    d = delong_test(y, a, b)
    from scipy.stats import norm, rankdata

    idx = rng.integers(0, n, size=(4000, n))
    yb = y[idx]
    n1 = yb.sum(axis=1)

    def auc(s):  # Mann-Whitney per replicate, midranks for ties
        r = rankdata(s[idx], axis=1)
        return ((r * yb).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * (n - n1))

    diffs = auc(a) - auc(b)
    assert auc(a)[0] == pytest.approx(roc_auc_score(yb[0], a[idx[0]]), abs=1e-12)
    se_boot = np.std(diffs, ddof=1)

    p_boot = 2 * norm.sf(abs(d["diff"]) / se_boot)
    assert d["se"] == pytest.approx(se_boot, rel=0.08)
    assert abs(d["p"] - p_boot) < 0.02
    assert 0.0 < d["p"] < 0.2  # a real but modest difference


def _many_scores():
    rng = np.random.default_rng(0)
    rows = []
    for sel in ("relieff", "su"):
        for clf, shift in (("nb", 1.5), ("svm", 0.5)):
            for subj in range(12):
                y = subj % 2
                for v in range(2):
                    for f in range(4):
                        s = shift * y + rng.normal() + (0.5 if sel == "su" else 0.0) * y
                        rows.append(dict(backbone="m", layer="l", protocol="loso", fold=subj,
                                         selector=sel, k=5, classifier=clf,
                                         video_id=f"{subj}_{v}", subject_id=f"S{subj}",
                                         frame=f, y=y, score=s, pred=int(s > 0.5 * shift)))
    return pd.DataFrame(rows)


def test_metrics_with_cis_tables_5_6_and_delong_table():
    scores = _many_scores()
    m = metrics_table(scores, n_boot=200, seed=0)
    assert {"accuracy_lo", "accuracy_hi", "auc_lo", "auc_hi", "f1_lo"} <= set(m.columns)
    assert (m["auc_lo"] <= m["auc"]).all() and (m["auc"] <= m["auc_hi"]).all()
    t5, t6 = table5(m), table6(m)
    assert len(t5) == len(t6) == 1
    assert t5.iloc[0]["classifier"] == "nb" and t5.iloc[0]["selector"] == "su"
    assert t5.iloc[0]["k"] == 5
    assert {"frame_accuracy", "frame_auc_lo", "video_auc", "video_auc_hi"} <= set(t5.columns)
    md = to_markdown(with_ci_columns(t5), "Table 5")
    assert "frame_auc" in md and "[" in md and "frame_auc_lo" not in md
    dl = delong_table(scores, m)
    assert set(dl["level"]) == {"frame", "video"}
    assert (dl["config_a"] == "relieff(5) nb").all() and (dl["config_b"] == "su(5) nb").all()
    assert dl["p"].between(0, 1).all() and (dl["n"].iloc[0] == 12 * 2 * 4)


def test_table7_fusion_on_synthetic_feature_sets():
    rows = []
    for feats, acc in (("fused", 0.9), ("deep", 0.8), ("strain", 0.7)):
        for clf, bonus in (("nb", 0.0), ("rf", 0.05)):
            for level in ("frame", "video"):
                rows.append(dict(backbone="m", layer="l", protocol="loso", selector="su", k=5,
                                 classifier=clf, features=feats, level=level, n=40,
                                 n_subjects=8, accuracy=acc + bonus, auc=acc + bonus + 0.02,
                                 accuracy_lo=acc - 0.1, accuracy_hi=acc + 0.1,
                                 auc_lo=acc - 0.1, auc_hi=acc + 0.1))
    t = table7(pd.DataFrame(rows))
    assert t["features"].tolist() == ["deep", "strain", "fused"]
    assert (t["classifier"] == "rf").all()
    assert t.set_index("features").loc["fused", "frame_accuracy"] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="'features' column"):
        table7(pd.DataFrame(rows).drop(columns="features"))


def test_metrics_table_keeps_feature_sets_apart():
    scores = pd.concat([_many_scores().assign(features=f) for f in ("deep", "fused")])
    m = metrics_table(scores, n_boot=0)
    assert set(m["features"]) == {"deep", "fused"} and len(m) == 2 * 2 * 2 * 2


def test_roc_figure_is_written(tmp_path):
    y, _, s, _ = clustered()
    out = tmp_path / "roc" / "m" / "l" / "loso.png"
    plot_roc([("frame", y, s), ("video", y, -s)], out, "m l loso")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_subject_results_of_the_table5_choice():
    from neopain.learn.breakdown import per_subject

    scores = _scores()
    t5 = table5(metrics_table(scores, n_boot=0) if "n_boot" in
                metrics_table.__code__.co_varnames else metrics_table(scores))
    ps = per_subject(scores, t5).set_index("subject_id")
    assert list(ps.index) == ["A", "B", "C"]
    assert ps.loc["A", "n_frames"] == 3 and ps.loc["A", "y"] == 1
    assert ps.loc["A", "mean_score"] == pytest.approx((0.9 + 0.2 + 0.8) / 3)
    assert ps.loc["A", "frame_accuracy"] == pytest.approx(2 / 3)
    assert ps.loc["B", "frame_accuracy"] == pytest.approx(1 / 2)
    assert ps.loc["C", "frame_accuracy"] == 0.0
    assert set(ps["configuration"]) == {"su(5) nb"}


def test_nan_scores_of_an_unfitted_model_give_undefined_auc_not_an_error():
    import numpy as np

    from neopain.learn.metrics import binary_metrics, bootstrap_ci

    y = np.array([0, 1, 0, 1])
    score = np.array([np.nan, np.nan, np.nan, np.nan])
    m = binary_metrics(y, np.zeros(4, int), score)
    assert np.isnan(m["auc"]) and m["accuracy"] == 0.5
    ci = bootstrap_ci(y, np.zeros(4, int), score, ["a", "b", "c", "d"], 50)
    assert np.isnan(ci["auc"][0]) and np.isfinite(ci["accuracy"][0])


def test_score_tables_label_themselves_not_their_paths(tmp_path):
    """backbone and layer come from the tables' columns: a file anywhere reads the same,
    and a table without them is refused, naming the file."""
    import pyarrow as pa

    from neopain.core.provenance import make_provenance, write_table
    from neopain.learn.metrics import read_score_files

    prov = make_provenance("classify", {})
    f = tmp_path / "not" / "the" / "layout.parquet"
    write_table(pa.Table.from_pandas(_scores(), preserve_index=False), f, prov)
    got, ups = read_score_files([f])
    assert set(got["backbone"]) == {"m"} and set(got["layer"]) == {"l"} and len(ups) == 1
    old = tmp_path / "results/scores/vgg/conv5/loso/su.parquet"
    write_table(pa.Table.from_pandas(_scores().drop(columns=["backbone", "layer"]),
                                     preserve_index=False), old, prov)
    with pytest.raises(ValueError, match=r"su\.parquet.*\['backbone', 'layer'\]"):
        read_score_files([f, old])


def test_tables_keep_selector_and_k_apart_and_show_them_together():
    t = table5(metrics_table(_scores()))
    assert list(t.columns[:6]) == ["backbone", "layer", "protocol", "selector", "k",
                                   "classifier"]
    shown = with_selector_label(t)
    assert "k" not in shown.columns and shown.iloc[0]["selector"] == "su(5)"
    assert list(shown.columns[:5]) == ["backbone", "layer", "protocol", "selector",
                                       "classifier"]
