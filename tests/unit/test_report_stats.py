"""The report's statistics on inputs with known answers: per-subject rows by subject x
label, per-video predictions, the chance row, constant predictors never chosen as best,
the subject-clustered DeLong test, p-value and n/a formatting, the landing headline."""

import numpy as np
import pandas as pd
import pytest

from neopain.learn.clustered import clustered_delong, clustered_delong_components, roc_band
from neopain.learn.chance import chance_table, with_chance_rows
from neopain.learn.breakdown import per_subject, per_video
from neopain.learn.delong import delong_components, delong_test
from neopain.learn.evaluate import constant_only, delong_table, table5, table6
from neopain.learn.metrics import metrics_table
from neopain.report.markdown import format_p


def _rows(spec, selector="su", k=5, classifier="nb"):
    """spec: (video, subject, y, [(score, pred), ...])"""
    out = []
    for vid, subj, y, frames in spec:
        for f, (s, p) in enumerate(frames):
            out.append(dict(backbone="m", layer="l", protocol="loso", fold=0,
                            selector=selector, k=k, classifier=classifier, video_id=vid,
                            subject_id=subj, frame=f, y=y, score=s, pred=p))
    return pd.DataFrame(out)


# subject A has a pain and a no-pain recording; B only pain; C only no pain
MIXED = [("a1", "A", 1, [(0.9, 1), (0.7, 1), (0.4, 0)]),
         ("a0", "A", 0, [(0.2, 0), (0.6, 1)]),
         ("b1", "B", 1, [(0.8, 1), (0.3, 0)]),
         ("c0", "C", 0, [(0.1, 0), (0.35, 0), (0.45, 0)])]


def test_per_subject_rows_by_subject_and_label():
    scores = _rows(MIXED)
    t5 = table5(metrics_table(scores, n_boot=0))
    ps = per_subject(scores, t5).set_index(["subject_id", "y"])
    assert list(ps.index) == [("A", 0), ("A", 1), ("B", 1), ("C", 0)]
    a1, a0 = ps.loc[("A", 1)], ps.loc[("A", 0)]
    assert (a1["n_videos"], a1["n_frames"]) == (1, 3) and (a0["n_videos"], a0["n_frames"]) == (1, 2)
    assert a1["mean_score"] == pytest.approx((0.9 + 0.7 + 0.4) / 3)   # not mixed with a0
    assert a0["mean_score"] == pytest.approx((0.2 + 0.6) / 2)
    assert a1["frame_accuracy"] == pytest.approx(2 / 3) and a0["frame_accuracy"] == 0.5
    assert a1["video_accuracy"] == 1.0        # 2 of 3 frames positive: right
    assert a0["video_accuracy"] == 0.0        # 1 of 2 positive: tie -> positive: wrong


def test_per_video_predictions():
    scores = _rows(MIXED)
    t5 = table5(metrics_table(scores, n_boot=0))
    pv = per_video(scores, t5).set_index("video_id")
    assert list(pv.index) == ["a0", "a1", "b1", "c0"]
    assert pv.loc["a1", "score"] == pytest.approx((0.9 + 0.7 + 0.4) / 3)
    assert pv.loc["a0", "pred"] == 1 and not pv.loc["a0", "correct"]
    assert pv.loc["c0", "pred"] == 0 and pv.loc["c0", "correct"]
    assert pv.loc["b1", "n_frames"] == 2 and pv.loc["b1", "subject_id"] == "B"


def test_chance_row_is_the_majority_class_and_auc_half():
    scores = _rows(MIXED)            # frames: 5 positive of 10; videos: 2 of 4
    m = metrics_table(scores, n_boot=0)
    ch = chance_table(m).set_index("level")
    assert ch.loc["frame", "n"] == 10 and ch.loc["frame", "n_pos"] == 5
    assert ch.loc["frame", "accuracy"] == 0.5 and ch.loc["frame", "majority"] == "positive"
    assert ch.loc["video", "auc"] == 0.5 and ch.loc["video", "balanced_accuracy"] == 0.5
    # 3 of 4 videos negative: always "no pain" is right 75% of the time
    more_neg = _rows(MIXED + [("d0", "D", 0, [(0.2, 0)])])
    ch2 = chance_table(metrics_table(more_neg, n_boot=0)).set_index("level")
    assert ch2.loc["video", "accuracy"] == pytest.approx(3 / 5)
    assert ch2.loc["video", "majority"] == "negative"
    assert (ch2.loc["video", "sensitivity"], ch2.loc["video", "specificity"]) == (0.0, 1.0)
    shown = with_chance_rows(table5(m), chance_table(m))
    assert shown["backbone"].tolist() == ["m", "chance"]
    assert shown.iloc[1]["video_accuracy"] == 0.5 and shown.iloc[1]["n_videos"] == 4


def test_constant_predictor_is_flagged_and_never_chosen():
    # 7 of 10 frames positive: "always pain" scores 0.7, the real classifier 0.6
    spec = [(f"v{i}", f"S{i}", int(i < 7), [(0.1 * i, 0)]) for i in range(10)]
    always = _rows([(v, s, y, [(0.5, 1)]) for v, s, y, _ in spec], classifier="svm_rbf")
    real = _rows([(v, s, y, [(sc, int(0.35 <= sc < 0.65))]) for v, s, y, [(sc, _)]
                  in spec], classifier="nb")
    m = metrics_table(pd.concat([always, real]), n_boot=0)
    frame = m[m.level == "frame"].set_index("classifier")
    assert frame.loc["svm_rbf", "constant"] and not frame.loc["nb", "constant"]
    assert frame.loc["svm_rbf", "accuracy"] > frame.loc["nb", "accuracy"]
    assert table5(m).iloc[0]["classifier"] == "nb"
    assert table6(m).iloc[0]["classifier"] == "nb"
    assert constant_only(m, "frame") == []
    only = metrics_table(always, n_boot=0)
    assert table5(only).empty and constant_only(only, "frame") == [("m", "l", "loso")]


def _clustered(n_subj=40, seed=1, shift=0.8):
    rng = np.random.default_rng(seed)
    subj, y, a, b = [], [], [], []
    for i in range(n_subj):
        n = rng.integers(4, 15)
        u = rng.normal(size=2)               # a subject effect shared by its rows
        yi = rng.integers(0, 2, n)
        subj += [f"S{i:02d}"] * n
        y += list(yi)
        a += list(shift * yi + u[0] + 0.5 * rng.normal(size=n))
        b += list(0.5 * shift * yi + u[1] + 0.5 * rng.normal(size=n))
    return np.array(y), np.array(a), np.array(b), np.array(subj)


def test_clustered_delong_one_row_per_subject_is_delong_up_to_small_sample_factors():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.vstack([y + rng.normal(size=60), 0.5 * y + rng.normal(size=60)])
    subj = [f"S{i}" for i in range(60)]
    auc_c, cov_c = clustered_delong_components(y, s, subj)
    auc_d, cov_d = delong_components(y, s)
    assert np.allclose(auc_c, auc_d)
    # hand-derived: clustered = I/(I-1) [S10/M^2 (M-1)... ] with the per-class factors
    M, N, I = int((y == 1).sum()), int((y == 0).sum()), 60
    pos, neg = s[:, y == 1], s[:, y == 0]
    v10 = np.array([[np.mean((p > neg[r]) + 0.5 * (p == neg[r])) for p in pos[r]]
                    for r in range(2)])
    v01 = np.array([[np.mean((pos[r] > q) + 0.5 * (pos[r] == q)) for q in neg[r]]
                    for r in range(2)])
    d10, d01 = v10 - auc_d[:, None], v01 - auc_d[:, None]
    expect = I / (I - 1) * (d10 @ d10.T / M ** 2 + d01 @ d01.T / N ** 2)
    assert np.allclose(cov_c, expect)
    assert np.allclose(cov_d, d10 @ d10.T / (M * (M - 1)) + d01 @ d01.T / (N * (N - 1)))


def test_clustered_delong_does_not_shrink_when_a_subjects_rows_are_repeated():
    y, a, b, subj = _clustered()
    once = clustered_delong(y, a, b, subj)
    rep = 5
    y5, a5, b5, s5 = (np.repeat(v, rep) for v in (y, a, b, subj))
    five = clustered_delong(y5, a5, b5, s5)
    assert five["diff"] == pytest.approx(once["diff"])
    assert five["se"] == pytest.approx(once["se"], rel=1e-9)
    assert five["p"] == pytest.approx(once["p"], rel=1e-9)
    # treating the repeated rows as independent (plain DeLong) shrinks the SE ~ sqrt(5)
    plain1, plain5 = delong_test(y, a, b), delong_test(y5, a5, b5)
    assert plain5["se"] < 0.5 * plain1["se"] and plain5["p"] < once["p"]


def test_clustered_delong_se_matches_the_subject_bootstrap():
    y, a, b, subj = _clustered(n_subj=60, seed=3)
    se = clustered_delong(y, a, b, subj)["se"]
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    uniq = np.unique(subj)
    rows = {s: np.flatnonzero(subj == s) for s in uniq}
    diffs = []
    for _ in range(400):
        idx = np.concatenate([rows[s] for s in rng.choice(uniq, uniq.size)])
        diffs.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
    assert se == pytest.approx(np.std(diffs), rel=0.25)
    assert se > delong_test(y, a, b)["se"] * 1.2   # frames are not independent


def test_delong_table_is_clustered_by_subject():
    y, a, b, subj = _clustered(n_subj=12, seed=5)
    rows = []
    for sel, s in (("relieff", a), ("su", b)):
        for i in range(len(y)):
            rows.append(dict(backbone="m", layer="l", protocol="loso", fold=0, selector=sel,
                             k=5, classifier="nb", video_id=f"{subj[i]}_{i % 3}",
                             subject_id=subj[i], frame=i, y=y[i], score=s[i],
                             pred=int(s[i] > 0.4)))
    scores = pd.DataFrame(rows)
    dl = delong_table(scores, metrics_table(scores, n_boot=0)).set_index("level")
    assert dl.loc["frame", "n_subjects"] == 12
    assert dl.loc["frame", "p"] == pytest.approx(clustered_delong(y, a, b, subj)["p"])


def test_p_values_and_too_few_subjects_print_in_words():
    from neopain.report.report_html import display

    assert format_p(1e-12) == "< 0.001" and format_p(0.0) == "< 0.001"
    assert format_p(0.0123) == "0.012" and format_p(float("nan")) == "n/a"
    df = pd.DataFrame({"auc": [0.8, 0.9], "auc_lo": [0.0, 0.7], "auc_hi": [1.0, 0.95],
                       "n_subjects": [3, 25], "p": [2e-5, 0.2]})
    d = display(df)
    assert d["auc"].tolist() == ["0.800, CI n/a (too few subjects)", "0.900 (0.700\u20130.950)"]
    assert d["p"].tolist() == ["< 0.001", "0.200"]


def test_markdown_pages_become_html_tables():
    """export's model card / calibration Markdown as report pages: pipe tables -> <table>,
    long tables sortable, the document's own heading kept, raw HTML escaped."""
    from neopain.report.report_html import SORTABLE_ROWS, markdown_page

    rows = "".join(f"| f{i} | {i / 100:.3f} |\n" for i in range(SORTABLE_ROWS + 1))
    md = ("# Calibration\n\nBrier <script>x</script> per fold.\n\n| fold | brier |\n"
          "|---|---:|\n| 0 | 0.210 |\n\n| fold | brier |\n|---|---:|\n" + rows)
    out = markdown_page(md, "Calibration")
    assert out.count("<h1>") == 1 and "<h1>Calibration</h1>" in out
    assert out.count("<table") == 2 and out.count('<table class="sortable">') == 1
    assert '<td style="text-align:right">0.210</td>' in out
    assert "<script>x</script>" not in out and "&lt;script&gt;" in out
    assert "<h1>Notes</h1>" in markdown_page("no heading", "Notes")


def test_roc_band_contains_the_curve():
    y, a, _, subj = _clustered()
    g, lo, hi = roc_band(y, a, subj, n_boot=100)
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, a)
    mid = np.interp(g, fpr, tpr)
    assert (lo <= hi).all() and ((lo <= mid + 1e-9) & (mid <= hi + 1e-9)).mean() > 0.95


def test_headline_nested_when_given_else_best_of_n_upper_bound():
    from neopain.report.landing import headline

    scores = _rows(MIXED)
    m = metrics_table(scores, n_boot=0)
    t5 = table5(m)
    h = headline(t5, m)
    assert h["source"] == "best_of_n" and h["optimistic"] and "UPPER BOUND" in h["how"]
    assert h["n_configurations"] == 1 and "best of 1" in h["how"]
    nested = pd.DataFrame([dict(estimate="nested", description="nested LOSO", protocol="loso",
                                level="video", auc=0.71, auc_lo=0.6, auc_hi=0.8,
                                balanced_accuracy=0.66, balanced_accuracy_lo=0.55,
                                balanced_accuracy_hi=0.75, accuracy=0.7, sensitivity=0.7,
                                specificity=0.6, n_videos=200, n_subjects=25, n_pos=109,
                                n_configurations=40, optimistic=False),
                           dict(estimate="best_of_n", description="best", protocol="loso",
                                level="video", auc=0.9, auc_lo=0.8, auc_hi=0.95,
                                balanced_accuracy=0.8, balanced_accuracy_lo=0.7,
                                balanced_accuracy_hi=0.9, accuracy=0.8, sensitivity=0.8,
                                specificity=0.8, n_videos=200, n_subjects=25, n_pos=109,
                                n_configurations=40, optimistic=True)])
    h = headline(t5, m, nested)
    assert h["source"] == "nested" and h["auc"] == 0.71 and not h["optimistic"]


def test_result_pages_are_html_tables_with_chance_row_and_words():
    from neopain.report.report_pages import best_table_page, finetune_page

    scores = _rows(MIXED)
    m = metrics_table(scores, n_boot=50)
    html = best_table_page(table5(m), chance_table(m), "Table 5", "keyframe accuracy", 1, [])
    assert html.count("<table") == 1 and '<tr class="chance">' in html
    assert "CI n/a (too few subjects)" in html and "balanced accuracy per recording" in html
    ft = pd.DataFrame({"method": ["frozen", "finetune"], "frame_auc": [0.7, 0.8],
                       "frame_auc_lo": [0.6, 0.7], "frame_auc_hi": [0.8, 0.9],
                       "n_subjects": [30, 30], "p_frame_vs_frozen": [np.nan, 1e-6]})
    page = finetune_page(ft, [])
    assert "&lt; 0.001" in page and "0.800 (0.700\u20130.900)" in page   # HTML-escaped


def test_summary_says_too_few_subjects_instead_of_numbers():
    from neopain.report.landing import facts, summary_lines

    # the demo's problem: every pain recording from one subject -> no per-recording AUC
    spec = [("a1", "A", 1, [(0.9, 1)]), ("a2", "A", 1, [(0.2, 0)]),
            ("b0", "B", 0, [(0.1, 0)]), ("c0", "C", 0, [(0.8, 1)])]
    scores = _rows(spec)
    m = metrics_table(scores, n_boot=50)
    t5 = table5(m)
    sheet = pd.DataFrame({"subject_id": ["A", "A", "B", "C", "D"],
                          "label": ["pain", "pain", "no_pain", "no_pain", "pain"]},
                         index=pd.Index(["a1", "a2", "b0", "c0", "d1"], name="video_id"))
    qc = pd.DataFrame({"video_id": ["a1", "a2", "b0", "c0", "d1"], "n_frames": [5] * 5,
                       "n_ok": [5, 5, 5, 5, 0], "success_rate": [1, 1, 1, 1, 0.0],
                       "status": ["ok"] * 4 + ["no_face"], "error": [None] * 5})
    f = facts(t5, m, chance_table(m), qc, per_video(scores, t5), sheet,
              {"labels": ["no_pain", "pain"], "positive_label": "pain",
               "samples": "samples/demo.tsv"})
    text = "\n".join(summary_lines(f))
    assert "AUC n/a (too few subjects)" in text and "1 with pain" in text
    assert "ILLUSTRATIVE" in text
    assert "4 of 5 recordings and 3 of 4 subjects used; 1 recording(s) left out" in text
    assert f["data"]["left_out"] == [{"video_id": "d1", "subject_id": "D", "label": "pain",
                                      "why": "tracking: no_face"}]
    assert "20 of 25 decoded frames had a tracked face" in text
