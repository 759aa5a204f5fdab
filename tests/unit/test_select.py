"""Tests for the selectors (``neopain.learn.relieff``, ``.su``, ``.select``): ReliefF and Symmetric Uncertainty with Weka 3.6 semantics."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy.io import arff
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline

from _paths import FIXTURES, SHARED_REFERENCE, SRC
from neopain.learn.prefilter import Prefiltered
from neopain.learn.relieff import ReliefF, relieff_scores
from neopain.learn.select import SELECTORS, make_selector
from neopain.learn.su import SymmetricUncertainty, su_scores

WEKA_FIXTURES = FIXTURES / "weka"


# ----------------------------------------------------------------------------
# straightforward (unvectorised) references, literal translations of Weka 3.6
# ----------------------------------------------------------------------------
def reference_relieff(X, y, k=10):
    """ReliefFAttributeEval.buildEvaluator with default options, loop by loop."""
    X = [list(map(float, row)) for row in np.asarray(X)]
    labels = sorted(set(np.asarray(y).tolist()))
    cls = [labels.index(v) for v in np.asarray(y).tolist()]
    n, p, C = len(X), len(X[0]), len(labels)
    lo = [min(r[a] for r in X) for a in range(p)]
    hi = [max(r[a] for r in X) for a in range(p)]

    def norm(x, a):
        if abs(hi[a] - lo[a]) < 1e-6:
            return 0.0
        return (x - lo[a]) / (hi[a] - lo[a])

    def diff(i, j, a):
        return abs(norm(X[i][a], a) - norm(X[j][a], a))

    def dist(i, j):
        d = 0.0
        for a in range(p):
            d += diff(i, j, a)
        return d

    probs = [cls.count(c) / n for c in range(C)]
    w = [0.0] * p
    for i in range(n):
        slots = [[] for _ in range(C)]  # [distance, instance] per class
        worst = [0] * C
        for j in range(n):  # findKHitMiss
            if j == i:
                continue
            d, c = dist(j, i), cls[j]
            if len(slots[c]) < k:
                slots[c].append([d, j])
            elif d < slots[c][worst[c]][0]:
                slots[c][worst[c]] = [d, j]
            else:
                continue
            ww = -1.0
            for t, (dd, _) in enumerate(slots[c]):
                if dd > ww:
                    ww, worst[c] = dd, t
        own = cls[i]  # updateWeightsDiscreteClass
        w_norm = 1.0 - probs[own] if C > 2 else 1.0
        for _, j in slots[own]:
            for a in range(p):
                w[a] -= diff(i, j, a) / len(slots[own])
        for c in range(C):
            if c == own:
                continue
            for _, j in slots[c]:
                for a in range(p):
                    t = diff(i, j, a) / len(slots[c])
                    w[a] += (probs[c] / w_norm) * t if C > 2 else t
    return np.array([v * (1.0 / n) for v in w])


def _xlogx(v):
    return v * math.log(v) if v > 0 else 0.0


def _entropy_bits(counts):
    total = sum(counts)
    return (-sum(_xlogx(c) for c in counts) + _xlogx(total)) / (total * math.log(2))


def _cond_entropy_bits(left, right):
    acc = 0.0
    for side in (left, right):
        for c in side:
            acc += _xlogx(c)
        acc -= _xlogx(sum(side))
    return -acc / ((sum(left) + sum(right)) * math.log(2))


def reference_mdl_bins(x, y, C):
    """Class counts of the bins of Weka's supervised Discretize (MDL, better encoding)."""
    pairs = sorted(zip(x, y))
    xs = [v for v, _ in pairs]
    ys = [c for _, c in pairs]

    def cuts(first, last):  # Discretize.cutPointsForSubset over [first, last)
        if last - first < 2:
            return []
        prior = [0] * C
        for i in range(first, last):
            prior[ys[i]] += 1
        prior_ent = _entropy_bits(prior)
        best_ent, best_i, n_cuts, best = prior_ent, None, 0, None
        left, right = [0] * C, list(prior)
        for i in range(first, last - 1):
            left[ys[i]] += 1
            right[ys[i]] -= 1
            if xs[i] < xs[i + 1]:
                e = _cond_entropy_bits(left, right)
                if e < best_ent:
                    best_ent, best_i, best = e, i, (list(left), list(right))
                n_cuts += 1
        gain = prior_ent - best_ent
        if gain <= 0:
            return []
        (bl, br), size = best, last - first
        k, kl, kr = (sum(1 for c in v if c > 0) for v in (prior, bl, br))
        delta = math.log2(3 ** k - 2) - (k * prior_ent - kr * _entropy_bits(br)
                                         - kl * _entropy_bits(bl))
        if gain <= (math.log2(n_cuts) + delta) / size:
            return []
        return cuts(first, best_i + 1) + [best_i + 1] + cuts(best_i + 1, last)

    edges = [0] + cuts(0, len(xs)) + [len(xs)]
    return [[sum(1 for i in range(a, b) if ys[i] == c) for c in range(C)]
            for a, b in zip(edges[:-1], edges[1:])]


def reference_su(X, y):
    """ContingencyTables.symmetricalUncertainty on the MDL bins, per column."""
    labels = sorted(set(np.asarray(y).tolist()))
    codes = [labels.index(v) for v in np.asarray(y).tolist()]
    C, n = len(labels), len(codes)
    col_ent = sum(_xlogx(codes.count(c)) for c in range(C)) - _xlogx(n)
    out = []
    for a in range(np.asarray(X).shape[1]):
        bins = reference_mdl_bins(np.asarray(X)[:, a].tolist(), codes, C)
        row_ent = sum(_xlogx(sum(b)) for b in bins)
        cond = sum(_xlogx(c) for b in bins for c in b) - row_ent
        row_ent -= _xlogx(n)
        if abs(row_ent) < 1e-6:
            out.append(0.0)
        else:
            out.append(2.0 * (col_ent - cond) / (col_ent + row_ent))
    return np.array(out)


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
INFORMATIVE = [7, 2, 15]  # decreasing class separation, in this order


def synthetic(n=300, n_noise=20, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, n_noise + 3))
    for col, shift in zip(INFORMATIVE, (3.0, 1.5, 0.7)):
        X[:, col] += shift * y
    return X, y


def tied_integers(n=60, p=6, n_classes=3, seed=1):
    """Few distinct values: exact distance ties at the k-th neighbour are common."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.integers(0, 3, (n, p)).astype(float)
    X[:, 0] += y
    return X, y


def read_arff(text_or_path):
    source = io.StringIO(text_or_path) if isinstance(text_or_path, str) else text_or_path
    data, meta = arff.loadarff(source)
    names = meta.names()
    X = np.column_stack([data[c].astype(np.float64) for c in names[:-1]])
    y = np.array([v.decode() for v in data[names[-1]]])
    return names[:-1], X, y


def read_weka_tsv(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return ([r["attribute"] for r in rows], np.array([float(r["relieff"]) for r in rows]),
            np.array([float(r["su"]) for r in rows]))


# three classes (20/15/10), integer-valued features: ReliefF meets exact distance
# ties at the k-th neighbour (Weka's scan and a plain stable sort disagree here)
SMALL3_ARFF = """@relation small3
@attribute x0 numeric
@attribute x1 numeric
@attribute x2 numeric
@attribute x3 numeric
@attribute x4 numeric
@attribute x5 numeric
@attribute class {a,b,c}
@data
""" + "\n".join([
    "2,0,0,0,2,0.1,b", "1,0,1,0,0,-0.4,a", "1,2,0,0,1,-0.1,a", "3,2,0,1,0,2.2,c",
    "0,0,1,1,2,-0.3,a", "1,1,2,1,2,-0.5,b", "2,1,2,0,0,0.9,b", "0,0,2,0,1,0.2,a",
    "1,2,2,0,1,0.9,a", "0,0,2,0,1,0.5,a", "0,0,2,0,0,-0.5,a", "1,2,0,1,0,1.4,c",
    "0,2,0,1,1,2.6,b", "0,1,2,2,0,0.6,a", "1,0,0,1,2,1.5,a", "3,2,0,1,2,3.7,c",
    "2,0,2,0,2,1.3,c", "0,1,0,2,2,0.3,a", "1,1,0,2,2,1.4,b", "0,0,0,1,0,1.4,b",
    "0,2,1,2,1,0.4,a", "2,2,1,2,0,2.2,c", "1,2,2,0,0,0.1,a", "0,1,1,2,0,-0.2,b",
    "1,2,0,2,0,1.9,c", "0,0,1,2,2,-0.6,a", "2,2,1,2,1,1.1,b", "0,1,1,0,0,0.6,b",
    "1,1,1,2,2,1.5,b", "3,0,2,1,0,2.7,c", "0,1,1,0,1,1.2,b", "1,0,0,2,0,0.3,a",
    "1,1,2,0,1,0.1,a", "2,1,1,0,0,0.6,b", "1,1,1,0,0,1.9,c", "2,1,0,0,0,1.6,c",
    "1,0,2,1,0,1.3,b", "1,0,0,1,1,1,b", "0,1,0,0,0,0.5,a", "0,2,1,0,2,-1.1,a",
    "1,0,0,0,2,1.7,b", "0,2,2,1,2,-0.6,a", "2,2,2,0,2,1.4,c", "1,2,2,1,0,-0.2,a",
    "1,1,2,0,1,-0.5,a",
]) + "\n"
# java -cp weka.jar WekaScores.java small3.arff (Weka 3.6.14)
SMALL3_WEKA_RELIEFF = [0.13031393298059893, 0.00834567901234563, 0.02155202821869487,
                       -0.02062786596119938, -0.009555555555555569, 0.12149750146972373]
SMALL3_WEKA_SU = [0.2808849819499481, 0.0, 0.0, 0.0, 0.0, 0.42841445164898756]


# ----------------------------------------------------------------------------
# ranking on a synthetic problem
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ReliefF, SymmetricUncertainty])
def test_informative_features_ranked_first_in_order(cls):
    X, y = synthetic()
    sel = cls(n_features_to_select=3).fit(X, y)
    assert sel.ranking_[:3].tolist() == INFORMATIVE
    assert sel.scores_.dtype == np.float64 and sel.scores_.shape == (X.shape[1],)
    assert np.all(np.diff(sel.scores_[sel.ranking_]) <= 0)
    assert sorted(np.flatnonzero(sel.get_support())) == sorted(INFORMATIVE)
    assert sel.transform(X).shape == (X.shape[0], 3)


def test_ranking_ties_broken_by_lower_index():
    X = np.zeros((6, 4))  # constant columns: every score is 0
    y = [0, 1, 0, 1, 0, 1]
    for cls in (ReliefF, SymmetricUncertainty):
        sel = cls(n_features_to_select=2).fit(X, y)
        assert np.all(sel.scores_ == 0)
        assert sel.ranking_.tolist() == [0, 1, 2, 3]
        assert sel.get_support().tolist() == [True, True, False, False]


def test_n_features_to_select_is_clipped():
    X, y = synthetic(n=40, n_noise=13)
    sel = ReliefF(n_features_to_select=50).fit(X, y)
    assert sel.get_support().all()


# ----------------------------------------------------------------------------
# ReliefF
# ----------------------------------------------------------------------------
def test_relieff_matches_reference_binary():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 5))
    y = (X[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(int)
    X = np.column_stack([X, np.full(30, 4.2), 1.0 + 1e-8 * rng.random(30)])  # flat columns
    got = ReliefF(n_neighbors=10).fit(X, y).scores_
    np.testing.assert_allclose(got, reference_relieff(X, y, 10), rtol=0, atol=1e-12)
    assert got[5] == 0.0 and got[6] == 0.0


@pytest.mark.parametrize("k", [1, 3, 10])
def test_relieff_matches_reference_multiclass_with_ties(k):
    # 3 classes, one with fewer than k instances, exact distance ties
    X, y = tied_integers(n=40, p=5, n_classes=3)
    y[:4] = 3  # a fourth, small class
    got = ReliefF(n_neighbors=k).fit(X, y).scores_
    np.testing.assert_allclose(got, reference_relieff(X, y, k), rtol=0, atol=1e-12)


def test_relieff_replays_weka_tie_rule():
    """Inline data whose k-th neighbour ties decide the scores (checked against Weka)."""
    _, X, y = read_arff(SMALL3_ARFF)
    got = ReliefF().fit(X, y).scores_
    np.testing.assert_allclose(got, SMALL3_WEKA_RELIEFF, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, reference_relieff(X, y), rtol=0, atol=1e-12)


def test_relieff_duplicate_rows_match_reference():
    # repeated rows: many neighbours at distance 0, ties everywhere
    rng = np.random.default_rng(8)
    unique = np.round(rng.normal(size=(9, 4)), 1)
    pick = rng.integers(0, 9, 45)
    X, y = unique[pick], (pick % 3 == 0).astype(int)
    y[::7] ^= 1
    got = ReliefF(n_neighbors=5).fit(X, y).scores_
    np.testing.assert_allclose(got, reference_relieff(X, y, 5), rtol=0, atol=1e-12)


def test_relieff_chunking_and_threads_do_not_change_scores():
    X, y = tied_integers(n=97, p=13, n_classes=3, seed=5)
    X[:, 5:] += np.random.default_rng(5).normal(size=(97, 8))
    base = ReliefF().fit(X, y).scores_  # whole symmetric distance matrix
    for params in ({"chunk_size": 1}, {"chunk_size": 7}, {"chunk_size": 97},
                   {"chunk_size": 200}, {"column_chunk_size": 1},
                   {"chunk_size": 5, "column_chunk_size": 3}, {"n_jobs": 2},
                   {"chunk_size": 11, "n_jobs": 3}):
        np.testing.assert_array_equal(ReliefF(**params).fit(X, y).scores_, base,
                                      err_msg=str(params))
    np.testing.assert_allclose(base, reference_relieff(X, y), rtol=0, atol=1e-12)


def test_relieff_tiny_class_and_label_types():
    # string labels, a class with a single instance (no hits for it)
    X, y = tied_integers(n=25, p=4, n_classes=2, seed=9)
    labels = np.where(y == 0, "calm", "pain").astype(object)
    labels[3] = "other"
    got = ReliefF(n_neighbors=4).fit(X, labels).scores_
    np.testing.assert_allclose(got, reference_relieff(X, labels, 4), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------
# Symmetric uncertainty
# ----------------------------------------------------------------------------
def _h(counts):
    p = np.asarray(counts, dtype=float) / np.sum(counts)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_su_hand_computed_single_cut():
    # sorted x = 1..20: one MDL cut at 10.5; left 9 x class 0 + 1 x class 1,
    # right 2 x class 0 + 8 x class 1; neither half passes the MDL test again
    x = np.arange(1, 21, dtype=float)
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1])
    h_c, h_x = _h([11, 9]), _h([10, 10])
    h_c_given_x = 0.5 * _h([9, 1]) + 0.5 * _h([2, 8])
    expected = 2 * (h_c - h_c_given_x) / (h_c + h_x)
    sel = SymmetricUncertainty(n_features_to_select=1).fit(x[:, None], y)
    assert sel.scores_[0] == pytest.approx(expected, abs=1e-12)
    assert sel.scores_[0] == pytest.approx(0.39875321459928403, abs=1e-12)  # Weka 3.6.14
    assert sel.n_bins_.tolist() == [2]


def test_su_perfect_cut_with_ties_and_no_cut():
    x_perfect = np.array([3, 1, 2, 2, 5, 7, 7, 6, 3, 6, 1, 5, 8, 8, 2, 9, 9, 4, 4, 8.0])
    y = (x_perfect > 4.5).astype(int)  # 10 / 10
    # SU = 2 (H(C) - 0) / (H(C) + H(X)) with H(X) = H(C) = 1 bit
    x_none = np.where(y == 1, 1.0, 2.0)[np.random.default_rng(0).permutation(20)]
    x_const = np.full(20, 3.0)
    sel = SymmetricUncertainty().fit(np.column_stack([x_perfect, x_none, x_const]), y)
    assert sel.scores_[0] == pytest.approx(1.0, abs=1e-12)
    assert sel.n_bins_.tolist()[0] == 2
    assert sel.scores_[2] == 0.0 and sel.n_bins_[2] == 1
    assert sel.scores_[1] == pytest.approx(reference_su(x_none[:, None], y)[0], abs=1e-12)


def test_su_matches_reference_with_ties_and_classes():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 150)
    X = np.column_stack([
        np.round(y + rng.normal(0, 0.6, 150), 1),   # informative, many ties
        np.round(rng.normal(size=150), 0),           # noise, few values
        y * 2.0 + rng.integers(0, 2, 150),           # several cuts
        rng.normal(size=150),                        # continuous noise
        np.where(y == 2, 1.0, 0.0) + rng.normal(0, 0.3, 150),
    ])
    sel = SymmetricUncertainty().fit(X, y)
    np.testing.assert_allclose(sel.scores_, reference_su(X, y), rtol=0, atol=1e-12)
    assert sel.n_bins_[2] >= 3


def test_su_tied_candidate_cuts_resolve_like_weka():
    """Two candidate cuts with equal entropy: Weka keeps the first (lower) one.

    Taking the last instead changes the later recursion, hence the bins (3 not 2)
    and the score (0.71237...); the expected values are Weka 3.6.14's output.
    """
    x = np.array([1, 6, 1, 5, 2, 5, 6, 2, 2, 2, 3, 1, 3, 1, 5, 6, 4, 4, 3, 5, 1, 4, 1, 6, 4,
                  1, 2, 5, 3, 2], dtype=float)
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1,
                  0, 0, 1, 1, 0])
    sel = SymmetricUncertainty().fit(x[:, None], y)
    assert sel.scores_[0] == pytest.approx(0.7084390726940081, abs=1e-12)
    assert sel.n_bins_.tolist() == [2]
    assert sel.scores_[0] == pytest.approx(reference_su(x[:, None], y)[0], abs=1e-12)
    assert ReliefF().fit(x[:, None], y).scores_[0] == pytest.approx(0.3906666666666673,
                                                                     abs=1e-12)


def test_su_column_chunks_do_not_change_scores():
    X, y = synthetic(n=120, n_noise=30, seed=2)
    X = np.round(X, 1)
    base = SymmetricUncertainty().fit(X, y).scores_
    for block in (1, 4, 33):
        np.testing.assert_array_equal(
            SymmetricUncertainty(column_chunk_size=block).fit(X, y).scores_, base)


def test_su_inline_weka_reference():
    _, X, y = read_arff(SMALL3_ARFF)
    got = SymmetricUncertainty().fit(X, y).scores_
    np.testing.assert_allclose(got, SMALL3_WEKA_SU, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------
# Weka fixtures
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["train", "hard"])
def test_scores_match_weka_fixtures(name):
    # the check sets themselves stay in ../shared/reference/weka (not copied here)
    source = SHARED_REFERENCE / "weka" / f"{name}.arff"
    if not source.is_file():
        pytest.skip(f"{source} not found (shared reference data, tests only)")
    names, X, y = read_arff(source)
    attrs, relieff, su = read_weka_tsv(WEKA_FIXTURES / f"{name}_scores.tsv")
    assert attrs == names
    np.testing.assert_allclose(ReliefF().fit(X, y).scores_, relieff, rtol=0, atol=1e-12)
    np.testing.assert_allclose(SymmetricUncertainty().fit(X, y).scores_, su,
                               rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------
# scikit-learn integration
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["relieff", "su"])
def test_pipeline_with_dataframe(name):
    X, y = synthetic()
    cols = [f"feat_{i:02d}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    pipe = Pipeline([("select", make_selector(name, 3)), ("nb", GaussianNB())])
    pipe.fit(df, y)
    assert (pipe.predict(df) == y).mean() > 0.9
    expected = [cols[i] for i in sorted(INFORMATIVE)]
    assert pipe[:-1].get_feature_names_out().tolist() == expected
    assert pipe.named_steps["select"].feature_names_in_.tolist() == cols
    assert pipe[:-1].transform(df).shape == (len(df), 3)


def test_make_selector_and_registry():
    assert SELECTORS == {"relieff": ReliefF, "su": SymmetricUncertainty}
    sel = make_selector("relieff", 7, n_neighbors=5, n_jobs=2)
    assert isinstance(sel, ReliefF)
    assert (sel.n_features_to_select, sel.n_neighbors, sel.n_jobs) == (7, 5, 2)
    assert make_selector("su", 4).get_params()["n_features_to_select"] == 4
    with pytest.raises(ValueError, match=r"unknown selector 'mrmr'.*relieff, su"):
        make_selector("mrmr", 5)


@pytest.mark.parametrize("cls", [ReliefF, SymmetricUncertainty])
def test_input_errors(cls):
    X, y = synthetic(n=20, n_noise=13)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"finite.*NaN/inf.*row 3, column 1"):
        cls().fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        cls().fit(bad, y)
    with pytest.raises(ValueError, match=r"at least two classes.*1 class: \[1\]"):
        cls().fit(X, np.ones(len(y), dtype=int))
    with pytest.raises(ValueError, match="n_features_to_select"):
        cls(n_features_to_select=0).fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        cls().fit(X, np.linspace(0, 1, len(y)))


def test_relieff_parameter_errors():
    X, y = synthetic(n=20, n_noise=13)
    with pytest.raises(ValueError, match="n_neighbors"):
        ReliefF(n_neighbors=0).fit(X, y)
    with pytest.raises(ValueError, match="chunk_size"):
        ReliefF(chunk_size=0).fit(X, y)
    with pytest.raises(ValueError, match="n_jobs"):
        ReliefF(n_jobs=0).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize("cls", [ReliefF, SymmetricUncertainty])
def test_scikit_learn_estimator_checks(cls):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(cls(n_features_to_select=2), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results
              if r["status"] == "failed"]
    assert not failed


def test_unfitted_selector_has_no_support():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ReliefF().get_support()


def test_module_functions_accept_codes():
    X, y = synthetic(n=60, n_noise=13)
    np.testing.assert_array_equal(relieff_scores(X, y, 10),
                                  ReliefF().fit(X, y).scores_)
    np.testing.assert_array_equal(su_scores(X, y)[0],
                                  SymmetricUncertainty().fit(X, y).scores_)


# ----------------------------------------------------------------------------
# engines, float32, prefilter
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numba", "torch", "scipy"])
def test_relieff_backends_are_bit_identical(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    X, y = tied_integers(n=83, p=29, n_classes=3, seed=11)
    X[:, 10:] += np.random.default_rng(11).normal(size=(83, 19))
    ref = reference_relieff(X, y)
    base = ReliefF(backend=backend).fit(X, y)
    assert base.backend_ == backend
    np.testing.assert_allclose(base.scores_, ref, rtol=0, atol=1e-12)
    for params in ({"chunk_size": 9}, {"column_chunk_size": 4},
                   {"chunk_size": 5, "column_chunk_size": 1, "n_jobs": 2}):
        got = ReliefF(backend=backend, device="cpu", **params).fit(X, y).scores_
        np.testing.assert_array_equal(got, base.scores_, err_msg=str(params))
    other = ReliefF(backend="scipy").fit(X, y).scores_
    np.testing.assert_array_equal(base.scores_, other)


def test_compiled_distances_span_stripes_and_attribute_chunks_bit_identically():
    """The numba tiles (stripes of 256 columns in a balanced order, 128 attributes per
    pass) give scipy's cityblock distances bit for bit, whole matrix and row blocks."""
    pytest.importorskip("numba")
    from scipy.spatial.distance import cdist

    from neopain.learn._kernels import balanced_order
    from neopain.learn.relieff_distances import Distances, weka_norm_params, weka_normalise_T

    assert balanced_order(5).tolist() == [0, 4, 1, 3, 2]
    rng = np.random.default_rng(4)
    X = rng.normal(size=(601, 300))
    X[:, 7] = 1.0  # a flat column: difference 0
    norm = weka_norm_params(X, 64)
    want = cdist(*(2 * [weka_normalise_T(X, slice(None), *norm).T]), "cityblock")
    for col_block in (300, 97):
        d = Distances(X, norm, "numba", 2, col_block, None)
        np.testing.assert_array_equal(d.full(), want)
        np.testing.assert_array_equal(d.rows(250, 533), want[250:533])


def test_compiled_neighbours_equal_the_numpy_twin_with_ties():
    """Weka's scan compiled (every row, every class) keeps the same neighbours in the same
    slot order as the numpy path (k smallest by distance and index; Weka's replay at a
    tie at the k-th distance): integer features with duplicated rows tie all the time."""
    pytest.importorskip("numba")
    from neopain.learn import relieff as rf
    from neopain.learn.relieff_distances import Distances, weka_norm_params

    rng = np.random.default_rng(1)
    n_ties = 0
    for trial in range(24):
        n, p = int(rng.integers(5, 160)), int(rng.integers(1, 12))
        X = rng.integers(0, 3, size=(n, p)).astype(float)
        if trial % 3 == 0:
            X = rng.random((n, p))
        if trial % 4 == 0:
            X[n // 2:] = X[:n - n // 2]
        codes = rng.integers(0, int(rng.integers(2, 5)), n)
        codes[:2] = [0, 1]
        n_classes = int(codes.max()) + 1
        k = int(rng.integers(1, 12))
        dist = Distances(X, weka_norm_params(X, 64), "numba", 2, 64, None)
        for chunk, use_full in ((n, True), (7, False)):
            got = rf._neighbours(dist, codes, n_classes, k, chunk, use_full, True)
            want = rf._neighbours(dist, codes, n_classes, k, chunk, use_full, False)
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"trial {trial}")
            np.testing.assert_array_equal(got[1], want[1])
        D = dist.full()
        np.fill_diagonal(D, np.inf)
        kth = np.sort(D, axis=1)[:, min(k, n - 2):min(k, n - 2) + 2]
        n_ties += int((kth[:, 0] == kth[:, 1]).sum())
    assert n_ties > 100  # the inputs did exercise the tie replay


def test_float32_input_is_not_copied_to_float64_and_scores_equal():
    X, y = synthetic(n=120, n_noise=40, seed=3)
    X32 = X.astype(np.float32)
    for cls in (ReliefF, SymmetricUncertainty):
        a = cls().fit(X32, y).scores_
        b = cls().fit(X32.astype(np.float64), y).scores_
        np.testing.assert_array_equal(a, b)


def test_unknown_backend_is_refused():
    X, y = synthetic(n=20, n_noise=13)
    with pytest.raises(ValueError, match="backend must be one of"):
        ReliefF(backend="cuda").fit(X, y)


def test_anova_prefilter_keeps_lineage_and_is_documented():
    X, y = synthetic(n=200, n_noise=60, seed=4)
    cols = [f"c{i}" for i in range(X.shape[1])]
    sel = make_selector("relieff", 3, prefilter={"method": "anova", "n_features": 10})
    assert isinstance(sel, Prefiltered)
    sel.fit(pd.DataFrame(X, columns=cols), y)
    assert set(INFORMATIVE) <= set(sel.prefilter_support_.tolist())
    assert sel.ranking_[:2].tolist() == INFORMATIVE[:2]
    assert sel.prefilter_support_.size == 10 and np.isnan(sel.scores_).sum() == X.shape[1] - 10
    assert set(sel.ranking_[:10].tolist()) == set(sel.prefilter_support_.tolist())
    assert sel.get_feature_names_out().tolist() == [cols[i] for i in sorted(sel.ranking_[:3])]
    # the kept columns are scored as on the reduced table
    keep = sel.prefilter_support_
    np.testing.assert_array_equal(sel.scores_[keep], ReliefF().fit(X[:, keep], y).scores_)
    assert make_selector("su", 3, prefilter={"method": "none"}).__class__ is SymmetricUncertainty
    with pytest.raises(ValueError, match="unknown prefilter 'mrmr'"):
        make_selector("su", 3, prefilter={"method": "mrmr"})


def test_relieff_leaves_torch_thread_count_alone():
    """numba's OpenMP layer resets the OpenMP thread count torch shares; a fit must not
    leave a torch that has already run on 1 thread on more (fresh process: numba's first
    parallel launch)."""
    pytest.importorskip("numba")
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "torch.ones(64, 64) @ torch.ones(64, 64)  # torch's threads are set up (used)\n"
        "assert torch.get_num_threads() == 1\n"
        "from neopain.learn.relieff import ReliefF\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.random((120, 30)); y = np.arange(120) % 2\n"
        "ReliefF(n_features_to_select=5, backend='numba', n_jobs=2).fit(X, y)\n"
        "print(torch.get_num_threads())\n")
    src = str(SRC)
    out = subprocess.run([sys.executable, "-c", code, src], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip().splitlines()[-1] == "1"
