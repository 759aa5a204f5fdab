"""Export: fitted models as data (no pickles), the verified artefact, calibration (the
real run-level round trip, Snakemake on CK+ sequences -> export -> reload elsewhere:
tests/workflow/test_export_dag.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _synthetic_model import INFORMATIVE, make_artefact, synthetic_table
from neopain.learn.calibrate import (Calibrator, brier_score, choose_threshold,
                               expected_calibration_error, fit_calibrator, fit_platt,
                               grouped_oof_scores)
from neopain.learn.classify import make_pipeline, positive_score
from neopain.deploy.arrays import ScoreModel, UnsupportedModelError, serialise_pipeline
from neopain.deploy.artefact import ArtefactError, read_artefact, write_artefact
from neopain.deploy.exported import load


# ----------------------------------------------------------------------------
# models as data
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["paper", "default"])
@pytest.mark.parametrize("name", ["nb", "knn", "svm", "svm_rbf", "rf"])
def test_numpy_scores_equal_sklearn(name, preset):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 7))
    y = (X[:, 0] - 0.7 * X[:, 2] + rng.normal(size=240) > 0).astype(int)
    Xt = rng.normal(size=(150, 7)) * 1.5
    pipe = make_pipeline(name, {}, 0, preset, n_features=7).fit(X, y)
    spec, arrays = serialise_pipeline(pipe)
    assert all(a.dtype != object for a in arrays.values())
    ours = ScoreModel(spec, arrays).positive_score(Xt)
    ref = positive_score(pipe, Xt)
    assert np.max(np.abs(ours - ref)) <= 1e-12
    if name in ("nb", "rf", "svm", "svm_rbf", "knn"):
        assert np.array_equal(ours, ref)   # same operations in the same order
    if name != "svm" and name != "svm_rbf":
        np.testing.assert_array_equal(ScoreModel(spec, arrays).predict_proba(Xt),
                                      pipe.predict_proba(Xt))


def test_knn_distance_weights_and_unsupported_models():
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures

    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(80, 3)), rng.integers(0, 2, 80)
    knn = KNeighborsClassifier(n_neighbors=5, weights="distance").fit(X, y)
    spec, arrays = serialise_pipeline(knn)
    np.testing.assert_allclose(ScoreModel(spec, arrays).predict_proba(X[:20] + 0.01),
                               knn.predict_proba(X[:20] + 0.01), atol=1e-12)
    from sklearn.tree import DecisionTreeClassifier

    with pytest.raises(UnsupportedModelError, match="DecisionTreeClassifier.*exportable "
                       "classifiers: GaussianNB"):
        serialise_pipeline(DecisionTreeClassifier().fit(X, y))
    with pytest.raises(UnsupportedModelError, match="PolynomialFeatures"):
        serialise_pipeline(Pipeline([("p", PolynomialFeatures()),
                                     ("c", KNeighborsClassifier())]).fit(X, y))


# ----------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------
def test_platt_recovers_a_known_sigmoid_and_isotonic_is_monotone():
    rng = np.random.default_rng(3)
    s = rng.normal(scale=2.0, size=40000)
    p = 1.0 / (1.0 + np.exp(-1.5 * s + 0.3))
    y = (rng.random(s.size) < p).astype(int)
    a, b = fit_platt(s, y)
    assert abs(a + 1.5) < 0.05 and abs(b - 0.3) < 0.05
    iso = fit_calibrator(s, y, "isotonic")
    grid = np.linspace(-8, 8, 200)
    q = iso.apply(grid)
    assert np.all(np.diff(q) >= 0) and q.min() >= 0 and q.max() <= 1
    assert Calibrator.from_dict(json.loads(json.dumps(iso.to_dict()))) == iso
    assert np.isnan(iso.apply(np.array([np.nan]))).all()
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(s[:10], np.zeros(10), "platt")


def test_brier_ece_threshold_known_values():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.6, 0.4])
    assert brier_score(y, p) == pytest.approx(0.085)
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    # J = 0.5 at t = 0.35 and t = 0.8: the one nearer 0.5 wins
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.35
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]) == 0.7
    assert choose_threshold([0, 1], [0.2, 0.3], 0.25) == 0.25


def test_grouped_oof_never_scores_a_subject_with_its_own_model():
    X, y, subj = synthetic_table(n_subjects=6, frames=5)
    seen = []

    def fit_score(tr, te):
        assert not set(subj[tr]) & set(subj[te])
        seen.append(te)
        return np.isin(subj[te], subj[tr]).astype(float)   # 1 would mean leakage

    oof, folds = grouped_oof_scores(len(y), y, subj, fit_score, n_splits=3, seed=0)
    assert np.all(oof == 0.0) and len(folds) == 3
    assert sorted(np.concatenate(seen)) == list(range(len(y)))
    with pytest.raises(ValueError, match="at least 2 training subjects"):
        grouped_oof_scores(4, np.array([0, 1, 0, 1]), np.array(["a"] * 4), fit_score)


# ----------------------------------------------------------------------------
# the artefact: known answer, fresh-process round trip, tampering
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("art") / "model.neopain"
    res, data = make_artefact(path, classifier="svm", preset="paper", k=2)
    return path, res, data


def test_known_answer_selects_the_informative_features(synthetic):
    path, res, (X, y, subj) = synthetic
    m = load(path)
    assert sorted(m.features.tolist()) == sorted(INFORMATIVE)
    assert m.info["selector"]["features"] == m.features.tolist()
    # new subjects from the same distribution: calibrated, and the decision works
    Xn, yn, _ = synthetic_table(n_subjects=4, seed=11)
    p = m.probability(Xn)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yn, p) > 0.97
    assert p[yn == 1].mean() > 0.75 and p[yn == 0].mean() < 0.25
    acc = np.mean((p >= m.threshold) == yn)
    assert acc > 0.9
    # calibration folds are grouped by subject and never mix them
    for f in m.provenance["calibration_folds"]:
        assert not set(f["train_subjects"]) & set(f["held_out_subjects"])
    assert m.info["calibration"]["method"] == "platt"
    assert 0.0 < m.threshold < 1.0


def test_round_trip_in_a_fresh_process_is_bit_identical(synthetic, tmp_path):
    path, res, (X, y, subj) = synthetic
    np.save(tmp_path / "X.npy", X)
    code = ("import sys, numpy as np; from neopain.deploy.exported import load; "
            "m = load(sys.argv[1]); X = np.load(sys.argv[2]); "
            "np.save(sys.argv[3], np.stack([m.score(X), m.probability(X)]))")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "X.npy"),
                    str(tmp_path / "out.npy")], check=True, timeout=120)
    raw, prob = np.load(tmp_path / "out.npy")
    # res: scores of the fitted scikit-learn pipeline in the exporting process
    assert np.array_equal(raw, res["raw"]) and np.array_equal(prob, res["probability"])


@pytest.mark.parametrize("classifier,preset,calibration", [
    ("nb", "paper", "isotonic"), ("knn", "paper", "platt"), ("rf", "paper", "isotonic"),
    ("svm_rbf", "default", "platt"), ("nb", "default", "none")])
def test_every_classifier_round_trips_through_the_artefact(classifier, preset, calibration,
                                                           tmp_path):
    path = tmp_path / "m.neopain"
    res, (X, y, subj) = make_artefact(path, classifier=classifier, preset=preset, k=4,
                                      calibration=calibration, selector="su")
    m = load(path)
    assert m.info["calibration"]["method"] == calibration
    assert np.array_equal(m.score(X), res["raw"])
    assert np.array_equal(m.probability(X), res["probability"])
    assert np.all((m.probability(X) >= 0) & (m.probability(X) <= 1))
    with pytest.raises(ValueError, match="features must be n x 40"):
        m.score(X[:, :10])


def test_svm_without_calibration_and_named_configurations_are_checked(tmp_path):
    from neopain.deploy.choose import study_configuration

    with pytest.raises(ValueError, match="decision values are not probabilities"):
        make_artefact(tmp_path / "x.neopain", classifier="svm", calibration="none")
    study = {"extract": {"backbones": {"fer": {"layers": ["penultimate"]}}},
             "protocols": {"loso": {"kind": "loso"}},
             "select": {"k": [5, 10], "selectors": {"su": {}}},
             "classify": {"classifiers": {"nb": {}}}}
    named = {"backbone": "fer", "layer": "penultimate", "protocol": "loso", "selector": "su",
             "k": 10, "classifier": "nb"}
    cfg, how = study_configuration({**study, "export": {"configuration": named}}, None)
    assert cfg.k == 10 and how.startswith("named")
    for key, bad, msg in [("k", 7, "k=7 is not in select.k"),
                          ("classifier", "rf", "classifier 'rf' is not in"),
                          ("layer", "conv_last", "layer 'conv_last' is not extracted")]:
        with pytest.raises(ValueError, match=msg):
            study_configuration({**study, "export": {"configuration": {**named, key: bad}}},
                                None)


def test_export_is_deterministic(synthetic, tmp_path):
    path, res, _ = synthetic
    res2, _ = make_artefact(tmp_path / "again.neopain", classifier="svm", preset="paper", k=2)
    assert res2["sha256"] == res["sha256"]
    assert (tmp_path / "again.neopain").read_bytes() == path.read_bytes()


def _rezip(src: Path, dst: Path, change=None, add=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if change and info.filename == change:
                b = bytearray(data)
                b[len(b) // 2] ^= 0x01
                data = bytes(b)
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)


def test_tampered_members_are_refused_naming_the_member(synthetic, tmp_path):
    path, _, _ = synthetic
    names = zipfile.ZipFile(path).namelist()
    assert {"manifest.json", "manifest.sha256", "model.json", "provenance.json",
            "arrays/selected_features.npy", "arrays/clf.support_vectors.npy"} <= set(names)
    for name in names:
        bad = tmp_path / "bad.neopain"
        _rezip(path, bad, change=name)
        with pytest.raises(ArtefactError) as ei:
            load(bad)
        msg = str(ei.value)
        assert str(bad) in msg
        named = "manifest.json" if name == "manifest.sha256" else name
        assert repr(named) in msg, msg
        assert "refusing" in msg or "format" in msg
    # a member the manifest does not list
    _rezip(path, tmp_path / "extra.neopain", add={"arrays/evil.npy": b"x"})
    with pytest.raises(ArtefactError, match="'arrays/evil.npy' is not listed"):
        load(tmp_path / "extra.neopain")


def test_raw_byte_damage_and_not_a_zip_are_refused(synthetic, tmp_path):
    path, _, _ = synthetic
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("model.json")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "damaged.neopain"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="'model.json'"):
        load(bad)
    (tmp_path / "junk.neopain").write_bytes(b"not a zip at all")
    with pytest.raises(ArtefactError, match="not a neopain model artefact"):
        load(tmp_path / "junk.neopain")
    with pytest.raises(ArtefactError, match="not found"):
        load(tmp_path / "missing.neopain")
    with pytest.raises(ArtefactError, match="is not the expected"):
        load(path, expect_sha256="0" * 64)


def test_wrong_format_version_is_refused(synthetic, tmp_path):
    path, _, _ = synthetic
    _, members = read_artefact(path)
    arrays = {n[7:-4]: np.load(io.BytesIO(b), allow_pickle=False)
              for n, b in members.items() if n.startswith("arrays/")}
    v2 = tmp_path / "v3.neopain"
    write_artefact(v2, json.loads(members["model.json"]),
                   json.loads(members["provenance.json"]), arrays,
                   format_version=3)
    with pytest.raises(ArtefactError, match=r"format version 3 is not supported \(this "
                       r"neopain reads format version\(s\) 1, 2\)"):
        load(v2)
    from neopain.cli import main

    assert main(["model", str(v2)]) == 2
    assert main(["model", str(path)]) == 0
