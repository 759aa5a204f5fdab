"""ReliefF and SU against Weka 3.6: live when Weka is installed, else committed fixtures.

* ``train.arff``, ``hard.arff`` (ties): ../shared/reference/weka;
* ``ckplus48_pixels``: a deterministic real feature table built from
  ../shared/data/ckplus48 (``tests/weka_tables.py``), Weka's output committed in
  ``tests/fixtures/weka/`` with the command that produced it (README there);
* live only: mobilenet_v2 penultimate features of 60 ckplus48 crops (float32
  values written as exact doubles).

Scores must agree to 1e-6 (observed: < 1e-15) and the top-15 rankings must be
identical (Weka's own ``Ranker`` output, parsed).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from weka_tables import (REFERENCE, ckplus_pixel_table, parse_ranking, parse_scores,
                         run_weka_ranking, run_weka_scores, weka_missing, write_arff)

import _paths
from neopain.learn.relieff import ReliefF
from neopain.learn.su import SymmetricUncertainty

FIXTURES = _paths.FIXTURES / "weka"
PIXELS_ARFF_SHA256 = "9735250e306fbab0987df01abf78a8f527540d3e9d31f312d559d367785f7bee"
TOL = 1e-6


def ours(X, y):
    return ReliefF().fit(X, y), SymmetricUncertainty().fit(X, y)


def assert_same_top(ranking, weka_rank, weka_scores, top=15):
    """Identical top-``top`` rankings; where Weka's scores tie (e.g. several SU = 0),
    Weka's Ranker orders the tied attributes by its unstable quicksort, so there
    only the score sequence must agree and each tied group the same attributes."""
    ours_top, weka_top = list(ranking[:top]), list(weka_rank[:top])
    np.testing.assert_array_equal(weka_scores[ours_top], weka_scores[weka_top])
    for i, (a, b) in enumerate(zip(ours_top, weka_top)):
        if (weka_scores == weka_scores[b]).sum() == 1:
            assert a == b, f"rank {i}: ours {a}, Weka {b}"


def check(X, y, w_relieff, w_su, rank_relieff=None, rank_su=None):
    rf, su = ours(X, y)
    np.testing.assert_allclose(rf.scores_, w_relieff, rtol=0, atol=TOL)
    np.testing.assert_allclose(su.scores_, w_su, rtol=0, atol=TOL)
    for sel, weka_rank, w in ((rf, rank_relieff, w_relieff), (su, rank_su, w_su)):
        if weka_rank is not None:
            assert_same_top(sel.ranking_, weka_rank, w)
    return float(np.abs(rf.scores_ - w_relieff).max()), float(np.abs(su.scores_ - w_su).max())


@pytest.fixture(scope="module")
def pixels(shared_data, tmp_path_factory):
    X, labels, _, names = ckplus_pixel_table(shared_data)
    arff = write_arff(tmp_path_factory.mktemp("weka") / "ckplus48_pixels.arff", X, labels,
                      names, relation="ckplus48_pixels")
    return X, labels, names, arff


def test_pixel_table_is_the_fixture_input(pixels):
    X, labels, names, arff = pixels
    assert X.shape == (327, 144) and set(labels) == {"happy", "other"}
    assert hashlib.sha256(arff.read_bytes()).hexdigest() == PIXELS_ARFF_SHA256


def test_real_table_matches_committed_weka_output(pixels):
    X, labels, names, _ = pixels
    attrs, w_rf, w_su = parse_scores((FIXTURES / "ckplus48_pixels_scores.tsv").read_text())
    assert attrs == names
    rank_rf = parse_ranking((FIXTURES / "ckplus48_pixels_relieff_ranker.txt").read_text())
    rank_su = parse_ranking((FIXTURES / "ckplus48_pixels_su_ranker.txt").read_text())
    assert len(rank_rf) == len(rank_su) == 144
    # the top 15 of both rankings have distinct scores: the order is well defined
    assert len(set(np.round(w_su[rank_su[:16]], 15))) == 16
    assert (w_su > 0).sum() >= 15
    check(X, labels, w_rf, w_su, rank_rf, rank_su)
    rf, su = ours(X, labels)  # no ties in either top 15: the rankings are identical
    assert rf.ranking_[:15].tolist() == rank_rf[:15]
    assert su.ranking_[:15].tolist() == rank_su[:15]
    # float32 input (as feature tables store it) is not rounded differently
    rf32 = ReliefF().fit(X.astype(np.float32), labels)
    assert rf32.scores_.dtype == np.float64


needs_weka = pytest.mark.skipif(weka_missing() is not None,
                                reason=f"Weka live comparison: {weka_missing()}")


@needs_weka
@pytest.mark.parametrize("name", ["train", "hard"])
def test_live_weka_reference_sets(name):
    from test_select import read_arff

    arff = REFERENCE / f"{name}.arff"
    _, X, y = read_arff(arff)
    _, w_rf, w_su = run_weka_scores(arff)
    check(X, y, w_rf, w_su, parse_ranking(run_weka_ranking(arff, "relieff")),
          parse_ranking(run_weka_ranking(arff, "su")))


@needs_weka
def test_live_weka_real_pixel_table(pixels):
    X, labels, _, arff = pixels
    _, w_rf, w_su = run_weka_scores(arff)
    committed = parse_scores((FIXTURES / "ckplus48_pixels_scores.tsv").read_text())
    np.testing.assert_array_equal(w_rf, committed[1])  # the fixture is reproducible
    np.testing.assert_array_equal(w_su, committed[2])
    check(X, labels, w_rf, w_su, parse_ranking(run_weka_ranking(arff, "relieff")),
          parse_ranking(run_weka_ranking(arff, "su")))


@needs_weka
def test_live_weka_mobilenet_features(shared_data, tmp_path):
    """Deep features of 60 crops (20 subjects' happy and non-happy faces)."""
    import csv

    import torch
    from PIL import Image

    from neopain.features.backbones import load_backbone
    from neopain.features.weightfiles import WeightsError

    try:
        net, _ = load_backbone("mobilenet_v2", ["penultimate"])
    except WeightsError as exc:
        pytest.skip(f"mobilenet_v2 weights not available: {exc}")
    rows = list(csv.DictReader(open(shared_data / "ckplus48.csv")))[::16][:60]
    imgs = [np.asarray(Image.open(shared_data / r["image"]).convert("RGB")
                       .resize((224, 224), Image.BILINEAR)) for r in rows]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        X = net.eval()(x)["penultimate"].numpy().astype(np.float32)
    labels = np.array(["happy" if r["emotion"] == "happy" else "other" for r in rows])
    assert 5 <= (labels == "happy").sum() <= 55
    keep = X.std(axis=0) > 0
    X = X[:, keep]
    arff = write_arff(tmp_path / "mobilenet.arff", X, labels)
    _, w_rf, w_su = run_weka_scores(arff)
    check(X, labels, w_rf, w_su, parse_ranking(run_weka_ranking(arff, "relieff")),
          parse_ranking(run_weka_ranking(arff, "su")))
