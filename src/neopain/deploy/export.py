"""Export one trained configuration as a single verifiable artefact (no pickles).

What is exported
    One configuration of the study -- the best of Table 5 (frame accuracy, ties frame
    AUC, over every backbone x layer x protocol, or within ``export.protocol``) or a
    named one -- *refitted on every subject of the study's sample sheet* (the training
    data of the bedside model): the selector is fitted on those rows only (nothing else
    exists at export time), the scaler and classifier on the selected columns (float64
    copies), the calibrator on out-of-fold scores of the same subjects with folds
    grouped by subject (:func:`neopain.learn.calibrate.grouped_oof_scores`, the whole
    configuration -- selector included -- refitted in every inner fold), and the
    decision threshold on the calibrated out-of-fold probabilities. Tracker, crop and
    backbone settings are those of the study.

Artefact format (``FORMAT`` ``neopain-model``, ``FORMAT_VERSION`` 1)
    A zip archive (deterministic: fixed member times, sorted names) holding

    * ``manifest.json`` -- ``format``, ``format_version``, and for every other member
      its sha256 and size;
    * ``manifest.sha256`` -- the sha256 of ``manifest.json`` (so every byte of every
      member is covered);
    * ``model.json`` -- the configuration: labels, tracker / crop settings, backbone
      (name, layer, config, weights file and sha256, feature dimension), selector (name,
      parameters, selected feature indices), scaler and classifier (type and scalar
      parameters), calibrator, threshold;
    * ``arrays/<name>.npy`` -- NumPy arrays (read with ``allow_pickle=False``): scaler
      offsets/scales, selected indices, and the fitted attributes of the classifier:
      GaussianNB ``theta_``/``var_``/``class_prior_``; kNN's training matrix (scaled)
      and labels; SVC support vectors, dual coefficients, intercept (and gamma /
      degree / coef0 in ``model.json``); random forests as concatenated scikit-learn
      ``tree_`` arrays (``children_left/right``, ``feature``, ``threshold``, ``value``,
      one offset per tree);
    * ``provenance.json`` -- the study's sample-sheet sha256 and every raw source and
      weight hash the feature table carries, the training subjects and row counts, the
      evaluation metrics of the configuration with their CIs, the calibration folds,
      the code version, package versions and the configuration hash;
    * ``weights/<file>`` -- only with ``embed_weights``: the backbone's weights file.
      Otherwise the weights are referenced by file name and sha256 and looked up as the
      pipeline does (``neopain.features.backbones``); the file found must have that sha256.

    :func:`load` verifies the format and version first, then every member's sha256
    against the manifest (and the manifest against ``manifest.sha256``), refuses
    unlisted or missing members, and names the member in every error
    (:class:`ArtefactError`). The hashes guard integrity, not authenticity: compare the
    artefact's own sha256 (printed at export, ``--sha256`` of ``neopain predict``) with
    one obtained out of band to trust its origin.

Scoring
    :class:`ScoreModel` re-implements ``predict_proba`` / ``decision_function`` of the
    serialised scikit-learn models in NumPy, following scikit-learn's own operation
    order, so scores match the fitted scikit-learn pipeline (random forests and naive
    Bayes bit for bit; SVM decision values to ~1e-15; kNN except for exact distance ties,
    which neither side orders meaningfully).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from neopain.learn.calibrate import Calibrator, choose_threshold, fit_calibrator, grouped_oof_scores

log = logging.getLogger(__name__)

FORMAT = "neopain-model"
FORMAT_VERSION = 1             #: frame-level artefacts (readable by every neopain)
VIDEO_FORMAT_VERSION = 2       #: video-level artefacts (neopain.deploy.videoexport)
SUPPORTED_VERSIONS = (1, 2)
SUFFIX = ".neopain"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

__all__ = ["FORMAT", "FORMAT_VERSION", "ArtefactError", "Configuration", "ExportedModel",
           "ScoreModel", "UnsupportedModelError", "choose_configuration", "export_model",
           "fit_configuration", "load", "serialise_pipeline", "write_artefact"]


class ArtefactError(ValueError):
    """An artefact that cannot be trusted or read; the message names the file and member."""


class UnsupportedModelError(TypeError):
    """A fitted model of a type the artefact format cannot store."""


# ----------------------------------------------------------------------------
# scikit-learn models as data
# ----------------------------------------------------------------------------
def _unwrap(model):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    if isinstance(model, GridSearchCV):
        model = model.best_estimator_
    if isinstance(model, Pipeline):
        steps = [s for _, s in model.steps if s not in (None, "passthrough")]
    else:
        steps = [model]
    return steps[:-1], steps[-1]


def _scaler_data(step) -> tuple[dict, dict[str, np.ndarray]]:
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if type(step) is MinMaxScaler:
        if step.clip:
            raise UnsupportedModelError("MinMaxScaler(clip=True) is not exportable")
        return {"type": "minmax"}, {"scaler.scale": np.asarray(step.scale_, np.float64),
                                    "scaler.min": np.asarray(step.min_, np.float64)}
    if type(step) is StandardScaler:
        arrays = {}
        if step.with_mean:
            arrays["scaler.mean"] = np.asarray(step.mean_, np.float64)
        if step.with_std:
            arrays["scaler.scale"] = np.asarray(step.scale_, np.float64)
        return {"type": "standard", "with_mean": bool(step.with_mean),
                "with_std": bool(step.with_std)}, arrays
    raise UnsupportedModelError(
        f"cannot export the preprocessing step {type(step).__name__}; exportable: "
        "MinMaxScaler, StandardScaler")


def serialise_pipeline(model) -> tuple[dict, dict[str, np.ndarray]]:
    """``(spec, arrays)`` of a fitted ``[scaler] -> classifier`` (or a GridSearchCV of one).

    Exportable: MinMaxScaler / StandardScaler; GaussianNB, KNeighborsClassifier
    (uniform or distance weights; euclidean, manhattan or minkowski metric), SVC
    (linear, rbf, poly, sigmoid kernels; two classes), RandomForestClassifier (one
    output), and the linear models of :mod:`neopain.learn.videomodels` (two-class
    LogisticRegression: probability; LinearSVC: decision value) as ``coef``/``intercept``.
    Anything else raises :class:`UnsupportedModelError` naming the type.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    pre, clf = _unwrap(model)
    if len(pre) > 1:
        raise UnsupportedModelError(f"at most one scaler before the classifier, got "
                                    f"{[type(s).__name__ for s in pre]}")
    spec: dict[str, Any] = {"scaler": {"type": "none"}}
    arrays: dict[str, np.ndarray] = {}
    if pre:
        spec["scaler"], a = _scaler_data(pre[0])
        arrays.update(a)
    classes = np.asarray(clf.classes_)
    if classes.dtype.kind not in "iub":
        raise UnsupportedModelError(f"classes must be integers, got {classes.dtype}")
    arrays["clf.classes"] = classes.astype(np.int64)
    t = type(clf)
    if t is GaussianNB:
        spec["classifier"] = {"type": "GaussianNB", "score": "proba"}
        arrays.update({"clf.theta": np.asarray(clf.theta_, np.float64),
                       "clf.var": np.asarray(clf.var_, np.float64),
                       "clf.class_prior": np.asarray(clf.class_prior_, np.float64)})
    elif t is KNeighborsClassifier:
        if clf.weights not in ("uniform", "distance"):
            raise UnsupportedModelError(f"KNeighborsClassifier(weights={clf.weights!r}) "
                                        "is not exportable (uniform or distance)")
        metric = clf.effective_metric_
        mp = dict(clf.effective_metric_params_ or {})
        p = {"euclidean": 2.0, "manhattan": 1.0}.get(metric, mp.get("p", clf.p))
        if metric not in ("euclidean", "manhattan", "minkowski") or set(mp) - {"p"}:
            raise UnsupportedModelError(f"kNN metric {metric!r} {mp} is not exportable")
        if getattr(clf, "outputs_2d_", False):
            raise UnsupportedModelError("multi-output kNN is not exportable")
        spec["classifier"] = {"type": "KNeighborsClassifier", "score": "proba",
                              "n_neighbors": int(clf.n_neighbors), "weights": clf.weights,
                              "p": float(p)}
        arrays.update({"clf.fit_X": np.asarray(clf._fit_X, np.float64),
                       "clf.fit_y": np.asarray(clf._y, np.int64)})
    elif t is SVC:
        if len(classes) != 2:
            raise UnsupportedModelError("only two-class SVCs are exportable")
        if clf.kernel not in ("linear", "rbf", "poly", "sigmoid"):
            raise UnsupportedModelError(f"SVC(kernel={clf.kernel!r}) is not exportable")
        spec["classifier"] = {"type": "SVC", "score": "decision", "kernel": clf.kernel,
                              "gamma": float(clf._gamma), "degree": int(clf.degree),
                              "coef0": float(clf.coef0)}
        arrays.update({"clf.support_vectors": np.asarray(clf.support_vectors_, np.float64),
                       "clf.dual_coef": np.asarray(clf.dual_coef_, np.float64).ravel(),
                       "clf.intercept": np.asarray(clf.intercept_, np.float64).ravel()})
    elif t is RandomForestClassifier:
        if clf.n_outputs_ != 1:
            raise UnsupportedModelError("multi-output random forests are not exportable")
        offsets, cl, cr, feat, thr, val = [0], [], [], [], [], []
        for est in clf.estimators_:
            tr = est.tree_
            cl.append(tr.children_left.astype(np.int64))
            cr.append(tr.children_right.astype(np.int64))
            feat.append(tr.feature.astype(np.int64))
            thr.append(tr.threshold.astype(np.float64))
            val.append(np.asarray(tr.value[:, 0, :], np.float64))
            offsets.append(offsets[-1] + tr.node_count)
        spec["classifier"] = {"type": "RandomForestClassifier", "score": "proba",
                              "n_estimators": len(clf.estimators_),
                              "n_classes": int(clf.n_classes_)}
        arrays.update({"clf.tree_offsets": np.asarray(offsets, np.int64),
                       "clf.children_left": np.concatenate(cl),
                       "clf.children_right": np.concatenate(cr),
                       "clf.feature": np.concatenate(feat),
                       "clf.threshold": np.concatenate(thr),
                       "clf.value": np.concatenate(val)})
    elif t in (LogisticRegression, LinearSVC) and hasattr(clf, "coef_"):
        if len(classes) != 2:
            raise UnsupportedModelError(f"only two-class {t.__name__} models are exportable")
        spec["classifier"] = {"type": "Linear", "link": "logistic" if t is LogisticRegression
                              else "none", "score": "proba" if t is LogisticRegression
                              else "decision", "sklearn": t.__name__}
        arrays.update({"clf.coef": np.asarray(clf.coef_, np.float64).ravel(),
                       "clf.intercept": np.asarray(clf.intercept_, np.float64).ravel()})
    else:
        raise UnsupportedModelError(
            f"cannot export a {t.__module__}.{t.__name__}; exportable classifiers: "
            "GaussianNB, KNeighborsClassifier, SVC, RandomForestClassifier, "
            "LogisticRegression (two classes), LinearSVC")
    spec["classifier"]["n_features"] = int(getattr(clf, "n_features_in_", 0))
    return spec, arrays


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_logsumexp(a, axis=1)`` (same operations, same order)."""
    amax = np.max(a, axis=1, keepdims=True)
    is_max = a == amax
    b = a.copy()
    b[is_max] = -np.inf
    m = np.sum(is_max.astype(b.dtype), axis=1, keepdims=True, dtype=b.dtype)
    shift = np.where(np.isfinite(amax), amax, 0)
    e = np.exp(b - shift)
    s = np.sum(e, axis=1, keepdims=True, dtype=e.dtype)
    s = np.where(s == 0, s, s / m)
    return np.squeeze(np.log1p(s) + np.log(m) + amax, axis=1)


class ScoreModel:
    """NumPy scoring of a serialised ``[scaler] -> classifier`` (see the module docstring).

    ``positive_score(X)`` equals :func:`neopain.learn.classify.positive_score` of the fitted
    pipeline: the SVM decision value towards class 1, else the probability of class 1.
    """

    def __init__(self, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
        self.spec = dict(spec)
        self.a = dict(arrays)
        self.kind = self.spec["classifier"]["type"]
        self.classes = [int(c) for c in self.a["clf.classes"]]

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64, copy=True)
        sc = self.spec["scaler"]
        if sc["type"] == "minmax":
            X *= self.a["scaler.scale"]
            X += self.a["scaler.min"]
        elif sc["type"] == "standard":
            if sc.get("with_mean", True):
                X -= self.a["scaler.mean"]
            if sc.get("with_std", True):
                X /= self.a["scaler.scale"]
        elif sc["type"] != "none":
            raise ArtefactError(f"unknown scaler type {sc['type']!r}")
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = self.transform(X)
        if self.kind == "GaussianNB":
            return self._nb(X)
        if self.kind == "KNeighborsClassifier":
            return self._knn(X)
        if self.kind == "RandomForestClassifier":
            return self._rf(X)
        if self.kind == "Linear" and self.spec["classifier"]["link"] == "logistic":
            p = 1.0 / (1.0 + np.exp(-self._linear(X)))
            return np.stack([1.0 - p, p], axis=1)
        raise ArtefactError(f"classifier {self.kind} has no probabilities (decision only)")

    def positive_score(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "SVC" or (self.kind == "Linear"
                                  and self.spec["classifier"]["score"] == "decision"):
            X = self.transform(X)
            s = self._svc(X) if self.kind == "SVC" else self._linear(X)
            return s if self.classes[-1] == 1 else -s
        proba = self.predict_proba(X)
        return proba[:, self.classes.index(1)] if 1 in self.classes else np.zeros(len(X))

    # --- classifiers ---------------------------------------------------------
    def _linear(self, X):
        """Decision value ``X w + b`` (scikit-learn's ``decision_function``)."""
        return X @ self.a["clf.coef"] + self.a["clf.intercept"][0]

    def _nb(self, X):
        theta, var, prior = self.a["clf.theta"], self.a["clf.var"], self.a["clf.class_prior"]
        jll = []
        for i in range(len(self.classes)):
            jointi = np.log(prior[i])
            n_ij = -0.5 * np.sum(np.log(2.0 * np.pi * var[i, :]))
            n_ij = n_ij - 0.5 * np.sum(((X - theta[i, :]) ** 2) / (var[i, :]), axis=1)
            jll.append(jointi + n_ij)
        jll = np.stack(jll).T
        log_prob_x = _logsumexp_rows(jll)
        return np.exp(jll - np.atleast_2d(log_prob_x).T)

    def _knn(self, X):
        c = self.spec["classifier"]
        fit_X, fit_y = self.a["clf.fit_X"], self.a["clf.fit_y"]
        k, p = int(c["n_neighbors"]), float(c["p"])
        n_cls = len(self.classes)
        out = np.zeros((len(X), n_cls))
        step = max(1, (1 << 22) // max(1, fit_X.size))
        for s in range(0, len(X), step):
            diff = np.abs(X[s:s + step, None, :] - fit_X[None, :, :])
            if p == 2.0:
                d = np.sqrt(np.sum(diff * diff, axis=2))
            elif p == 1.0:
                d = np.sum(diff, axis=2)
            else:
                d = np.sum(diff ** p, axis=2) ** (1.0 / p)
            idx = np.argsort(d, axis=1, kind="stable")[:, :k]
            dk = np.take_along_axis(d, idx, axis=1)
            if c["weights"] == "uniform":
                w = np.ones_like(dk)
            else:
                with np.errstate(divide="ignore"):
                    w = 1.0 / dk
                zero = np.isinf(w).any(axis=1)
                w[zero] = (dk[zero] == 0).astype(np.float64)
            labels = fit_y[idx]
            block = np.zeros((len(idx), n_cls))
            for j in range(k):
                block[np.arange(len(idx)), labels[:, j]] += w[:, j]
            norm = block.sum(axis=1, keepdims=True)
            norm[norm == 0.0] = 1.0
            out[s:s + step] = block / norm
        return out

    def _svc(self, X):
        # libsvm's operations in libsvm's order, so decision values equal scikit-learn's
        # bit for bit: each kernel value from one BLAS dot product (of x and the support
        # vector for linear, of their difference with itself for rbf, then libm's exp),
        # the decision value summed support vector by support vector (vectorised over
        # rows only: elementwise IEEE operations are exact)
        c = self.spec["classifier"]
        sv = self.a["clf.support_vectors"]
        kern, g = c["kernel"], float(c["gamma"])
        K = np.empty((len(X), len(sv)))
        for i, x in enumerate(X):
            if kern == "rbf":
                K[i] = [math.exp(-g * float(np.dot(d, d))) for d in x - sv]
            else:
                K[i] = [float(np.dot(x, s)) for s in sv]
        if kern == "poly":
            K = (g * K + c["coef0"]) ** c["degree"]
        elif kern == "sigmoid":
            K = np.tanh(g * K + c["coef0"])
        elif kern not in ("linear", "rbf"):
            raise ArtefactError(f"unknown SVC kernel {kern!r}")
        # scikit-learn flips libsvm's signs for two classes; -(sum c K - rho) is computed
        # as sum (-c) K + rho, which is exact
        coef = self.a["clf.dual_coef"]
        dec = np.zeros(len(X))
        for i in range(len(coef)):
            dec += coef[i] * K[:, i]
        return dec + self.a["clf.intercept"][0]

    def _rf(self, X):
        X32 = np.asarray(X, dtype=np.float32)   # trees compare float32 inputs, as sklearn
        off = self.a["clf.tree_offsets"]
        left, right = self.a["clf.children_left"], self.a["clf.children_right"]
        feat, thr, val = self.a["clf.feature"], self.a["clf.threshold"], self.a["clf.value"]
        n_cls = int(self.spec["classifier"]["n_classes"])
        total = np.zeros((len(X), n_cls), dtype=np.float64)
        rows = np.arange(len(X))
        for t in range(len(off) - 1):
            base = off[t]
            node = np.zeros(len(X), dtype=np.int64)
            while True:
                g = base + node
                active = left[g] != -1
                if not active.any():
                    break
                ga = g[active]
                go_left = X32[rows[active], feat[ga]] <= thr[ga]
                node[active] = np.where(go_left, left[ga], right[ga])
            proba = val[base + node][:, :n_cls].copy()
            norm = proba.sum(axis=1)
            norm[norm == 0.0] = 1.0
            proba /= norm[:, None]
            total += proba
        total /= len(off) - 1
        return total


# ----------------------------------------------------------------------------
# configurations and fitting
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Configuration:
    backbone: str
    layer: str
    protocol: str
    selector: str
    k: int
    classifier: str

    def label(self) -> str:
        return (f"{self.backbone}/{self.layer} {self.selector}({self.k}) {self.classifier} "
                f"[{self.protocol}]")


def choose_configuration(table5: pd.DataFrame, protocol: str | None = None) -> Configuration:
    """The best Table 5 row: highest frame accuracy, then frame AUC, then name order."""
    t = table5.copy()
    if protocol is not None:
        t = t[t["protocol"] == protocol]
        if t.empty:
            raise ValueError(f"export.protocol {protocol!r}: no Table 5 row for it "
                             f"(protocols: {sorted(set(table5['protocol']))})")
    if t.empty:
        raise ValueError("Table 5 is empty: nothing to export")
    t["_acc"] = t["frame_accuracy"].fillna(-1)
    t["_auc"] = t["frame_auc"].fillna(-1)
    t = t.sort_values(["_acc", "_auc", "backbone", "layer", "protocol", "selector",
                       "classifier"], ascending=[False, False, True, True, True, True, True])
    r = t.iloc[0]
    return Configuration(str(r["backbone"]), str(r["layer"]), str(r["protocol"]),
                         str(r["selector"]), int(r["k"]), str(r["classifier"]))


@dataclass
class Settings:
    """Stage settings of the study a configuration is fitted with."""

    selector_params: dict
    prefilter: dict | None
    classifier_params: dict
    preset: str = "paper"
    search: dict | None = None
    seed: int = 0


@dataclass
class Fitted:
    cols: np.ndarray            # selected feature indices, in rank order
    selector_scores: np.ndarray
    pipeline: Any
    chosen_params: dict

    def score(self, X: np.ndarray) -> np.ndarray:
        from neopain.learn.classify import positive_score

        return positive_score(self.pipeline, np.asarray(X[:, self.cols], dtype=np.float64))


def fit_configuration(X: np.ndarray, y: np.ndarray, subjects: np.ndarray,
                      cfg: Configuration, st: Settings) -> Fitted:
    """Selector (top ``k``) -> [scaler] -> classifier on these rows only."""
    import warnings

    from neopain.learn.classify import make_pipeline, make_search
    from neopain.learn.select import make_selector

    y = np.asarray(y).astype(np.int8)
    if len(np.unique(y)) < 2:
        raise ValueError("fitting needs rows of both classes")
    sel = make_selector(cfg.selector, cfg.k, prefilter=st.prefilter,
                        **dict(st.selector_params or {})).fit(X, y)
    cols = np.asarray(sel.ranking_[:cfg.k], dtype=np.int64)
    Xs = np.asarray(X[:, cols], dtype=np.float64)
    pipe = make_pipeline(cfg.classifier, st.classifier_params, st.seed, st.preset,
                         n_features=len(cols))
    chosen = {}
    search = dict(st.search or {})
    model = pipe
    if search.get("enabled"):
        gs = make_search(pipe, cfg.classifier, search, np.asarray(subjects), y, st.seed)
        if gs is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gs.fit(Xs, y, groups=np.asarray(subjects))
            model = gs.best_estimator_
            chosen = {k.removeprefix("clf__"): v for k, v in gs.best_params_.items()}
    if model is pipe:
        pipe.fit(Xs, y)
    return Fitted(cols, np.asarray(sel.scores_, np.float64)[cols], model, chosen)


# ----------------------------------------------------------------------------
# the artefact
# ----------------------------------------------------------------------------
def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _strict(obj):
    """NaN / inf -> None, NumPy scalars -> Python: the members are strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_bytes(obj) -> bytes:
    return (json.dumps(_strict(obj), indent=1, sort_keys=True, default=_json_default,
                       allow_nan=False) + "\n").encode()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_artefact(path: str | Path, model: dict, provenance: dict,
                   arrays: Mapping[str, np.ndarray],
                   extra: Mapping[str, bytes] | None = None,
                   format_version: int = FORMAT_VERSION) -> str:
    """Write the artefact atomically; return its sha256."""
    from neopain.core.provenance import atomic_path

    members: dict[str, bytes] = {"model.json": _json_bytes(model),
                                 "provenance.json": _json_bytes(provenance)}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype == object:
            raise ValueError(f"array {name!r} has dtype object: not storable without pickle")
        members[f"arrays/{name}.npy"] = _npy(a)
    for name, b in (extra or {}).items():
        members[name] = bytes(b)
    manifest = {"format": FORMAT, "format_version": int(format_version),
                "members": {n: {"sha256": _sha(b), "size": len(b)}
                            for n, b in sorted(members.items())}}
    mbytes = _json_bytes(manifest)
    members["manifest.json"] = mbytes
    members["manifest.sha256"] = (_sha(mbytes) + "\n").encode()
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in ["manifest.json", "manifest.sha256"] + sorted(
                    n for n in members if not n.startswith("manifest.")):
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = (zipfile.ZIP_STORED if name.startswith("weights/")
                                      else zipfile.ZIP_DEFLATED)
                info.external_attr = 0o644 << 16
                zf.writestr(info, members[name])
    from neopain.core.provenance import sha256_file

    return sha256_file(path)


def read_artefact(path: str | Path) -> tuple[dict, dict[str, bytes]]:
    """``(manifest, members)`` after every check (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"{path}: model artefact not found")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtefactError(f"{path}: not a neopain model artefact (not a zip archive: "
                            f"{exc})") from None
    with zf:
        names = zf.namelist()

        def read(name: str) -> bytes:
            try:
                return zf.read(name)
            except KeyError:
                raise ArtefactError(f"{path}: member {name!r} is missing") from None
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                raise ArtefactError(f"{path}: member {name!r} is damaged ({exc}); "
                                    f"refusing to load") from None

        mbytes = read("manifest.json")
        try:
            manifest = json.loads(mbytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtefactError(f"{path}: member 'manifest.json' is not valid JSON ({exc}); "
                                "refusing to load") from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != FORMAT:
            raise ArtefactError(f"{path}: member 'manifest.json' does not describe a "
                                f"{FORMAT!r} artefact (format {fmt!r})")
        version = manifest.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise ArtefactError(
                f"{path}: format version {version!r} is not supported (this neopain reads "
                f"format version(s) {', '.join(map(str, SUPPORTED_VERSIONS))}); export the "
                "model again with this version or use a matching neopain")
        expect = read("manifest.sha256").decode("ascii", "replace").strip()
        if _sha(mbytes) != expect:
            raise ArtefactError(f"{path}: member 'manifest.json' sha256 {_sha(mbytes)} does "
                                f"not match 'manifest.sha256' ({expect[:64]}): the artefact "
                                "was modified or damaged; refusing to load")
        listed = manifest.get("members") or {}
        unlisted = sorted(set(names) - set(listed) - {"manifest.json", "manifest.sha256"})
        if unlisted:
            raise ArtefactError(f"{path}: member {unlisted[0]!r} is not listed in the "
                                "manifest; refusing to load")
        members = {}
        for name, ent in sorted(listed.items()):
            b = read(name)
            if _sha(b) != ent.get("sha256") or len(b) != ent.get("size"):
                raise ArtefactError(
                    f"{path}: member {name!r} sha256 {_sha(b)} does not match the manifest "
                    f"({ent.get('sha256')}): the artefact was modified or damaged; "
                    "refusing to load")
            members[name] = b
    return manifest, members


class ExportedModel:
    """A loaded, verified artefact: the configuration and the NumPy scorer."""

    def __init__(self, path: Path, manifest: dict, members: dict[str, bytes], sha256: str):
        self.path = Path(path)
        self.manifest = manifest
        self.sha256 = sha256
        try:
            self.info = json.loads(members["model.json"])
            self.provenance = json.loads(members["provenance.json"])
        except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtefactError(f"{path}: model.json / provenance.json unreadable ({exc})") \
                from None
        self.arrays: dict[str, np.ndarray] = {}
        for name, b in members.items():
            if name.startswith("arrays/") and name.endswith(".npy"):
                try:
                    self.arrays[name[7:-4]] = np.load(io.BytesIO(b), allow_pickle=False)
                except ValueError as exc:
                    raise ArtefactError(f"{path}: member {name!r} is not a plain NumPy array "
                                        f"({exc})") from None
        self._weights = {n[8:]: b for n, b in members.items() if n.startswith("weights/")}
        #: "frame" (frame scores from selected features) or "video" (neopain.deploy.videoexport)
        self.level = str(self.info.get("level", "frame"))
        self.video = None
        if self.level == "video":
            from neopain.deploy.videoexport import VideoScorer

            self.video = VideoScorer(self.info["video"], self.arrays)
            self.features = None
            self.scorer = self.video.model
        else:
            self.features = np.asarray(self.arrays["selected_features"], dtype=np.int64)
            self.scorer = ScoreModel(self.info["model"], self.arrays)
        self.calibrator = Calibrator.from_dict(self.info["calibration"])
        self.threshold = float(self.info["threshold"]["value"])

    @property
    def labels(self) -> tuple[str, str]:
        """(negative label, positive label)."""
        pos = self.info["positive_label"]
        neg = [lab for lab in self.info["labels"] if lab != pos][0]
        return neg, pos

    def score(self, F: np.ndarray) -> np.ndarray:
        """Raw classifier scores of full feature vectors ``F`` (n x feature_dim)."""
        F = np.asarray(F)
        dim = int(self.info["backbone"]["feature_dim"])
        if F.ndim != 2 or F.shape[1] != dim:
            raise ValueError(f"features must be n x {dim}, got {F.shape}")
        if self.video is not None:
            raise ValueError(f"{self.path}: a video-level model scores recordings, not single "
                             "frames: use .video.score_frames(F, reference)")
        return self.scorer.positive_score(np.asarray(F[:, self.features], dtype=np.float64))

    def probability(self, F: np.ndarray) -> np.ndarray:
        return self.calibrator.apply(self.score(F))

    def embedded_weights(self) -> dict[str, bytes]:
        return dict(self._weights)

    def summary(self) -> str:
        b, c = self.info["backbone"], self.info["configuration"]
        if self.video is not None:
            v = self.info["video"]
            return (f"{self.path.name} (sha256 {self.sha256[:16]}..., format "
                    f"{self.manifest['format_version']}): video-level {b['name']}/"
                    f"{b['layer']}, baseline {v['baseline']}, pooling {v['pooling']} "
                    f"{v['stats']}, "
                    + ("all features" if c["selector"] == "all" else
                       f"{c['selector']}({c['k']})")
                    + f" {c['model']} {c['params']}, "
                    f"calibration {self.calibrator.method}, threshold {self.threshold:.4f}")
        return (f"{self.path.name} (sha256 {self.sha256[:16]}..., format "
                f"{self.manifest['format_version']}): {b['name']}/{b['layer']} "
                f"{c['selector']}({c['k']}) {c['classifier']}, calibration "
                f"{self.calibrator.method}, threshold {self.threshold:.4f}")


def load(path: str | Path, expect_sha256: str | None = None) -> ExportedModel:
    """Verify and load an artefact (:class:`ArtefactError` on any problem)."""
    from neopain.core.provenance import sha256_file

    path = Path(path)
    manifest, members = read_artefact(path)
    digest = sha256_file(path)
    if expect_sha256 and not digest.startswith(expect_sha256.lower()):
        raise ArtefactError(f"{path}: sha256 {digest} is not the expected {expect_sha256}")
    return ExportedModel(path, manifest, members, digest)


# ----------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------
def export_model(
    X: np.ndarray, y: np.ndarray, subjects: np.ndarray, cfg: Configuration, st: Settings,
    out: str | Path, *, pipeline: Mapping[str, Any], provenance: Mapping[str, Any],
    calibration: str = "platt", calibration_splits: int = 5, threshold: str | float = "youden",
    embed_weights: Mapping[str, bytes] | None = None, name: str | None = None,
) -> dict[str, Any]:
    """Fit ``cfg`` on all rows (every training subject), calibrate it by subject-grouped
    cross-validation on the same rows, write the artefact to ``out``.

    ``pipeline``: the study's settings that are not fitted (``labels``,
    ``positive_label``, ``fps_for_images``, ``track``, ``crop``, ``backbone`` with at
    least ``name``, ``layer``, ``weights_file``, ``weights_sha256``). Returns a summary
    with the artefact's sha256, the training scores (``raw``, ``probability``, computed
    with the fitted scikit-learn pipeline) and the calibration folds.
    """
    if cfg.classifier in ("svm", "svm_rbf") and calibration == "none":
        raise ValueError("calibration 'none' with an SVM: decision values are not "
                         "probabilities; use platt or isotonic")
    X = np.asarray(X)
    y = np.asarray(y).astype(np.int8)
    subjects = np.asarray(subjects).astype(str)
    final = fit_configuration(X, y, subjects, cfg, st)
    spec, arrays = serialise_pipeline(final.pipeline)
    arrays["selected_features"] = final.cols
    arrays["selector_scores"] = final.selector_scores

    def fit_score(tr, te):
        return fit_configuration(X[tr], y[tr], subjects[tr], cfg, st).score(X[te])

    oof, folds = grouped_oof_scores(len(y), y, subjects, fit_score, calibration_splits,
                                    st.seed)
    cal = fit_calibrator(oof, y, calibration)
    p_oof = cal.apply(oof)
    thr = choose_threshold(y, p_oof, threshold)
    raw = final.score(X)
    prob = cal.apply(raw)
    model = {
        "name": name or cfg.label(),
        "labels": list(pipeline["labels"]),
        "positive_label": pipeline["positive_label"],
        "configuration": asdict(cfg),
        "fps_for_images": float(pipeline.get("fps_for_images", 30.0)),
        "track": dict(pipeline.get("track") or {}),
        "crop": dict(pipeline.get("crop") or {}),
        "tracker_weights": dict(pipeline.get("tracker_weights") or {}),
        "backbone": {**dict(pipeline["backbone"]), "feature_dim": int(X.shape[1]),
                     "embedded": bool(embed_weights)},
        "selector": {"name": cfg.selector, "k": cfg.k, "params": dict(st.selector_params),
                     "prefilter": dict(st.prefilter or {"method": "none"}),
                     "features": final.cols.tolist(),
                     "fitted_on": "every subject of the study's sample sheet (the training "
                                  "data); no other rows"},
        "model": {**spec, "name": cfg.classifier, "preset": st.preset,
                  "params": dict(st.classifier_params or {}), "chosen_params": final.chosen_params,
                  "fit_dtype": "float64"},
        "calibration": {**cal.to_dict(), "n_splits": calibration_splits,
                        "grouped_by": "subject", "on": "out-of-fold scores of the training "
                        "subjects (selector, scaler and classifier refitted per fold)"},
        "threshold": {"value": thr, "rule": threshold if isinstance(threshold, str)
                      else "fixed", "on": "calibrated out-of-fold probabilities of the "
                      "training subjects", "decision": "pain when probability >= value"},
        "seed": st.seed,
    }
    uniq, counts = np.unique(subjects, return_counts=True)
    prov = {**dict(provenance),
            "training": {"n_rows": int(len(y)), "n_positive": int(y.sum()),
                         "subjects": uniq.tolist(), "rows_per_subject": counts.tolist()},
            "calibration_folds": folds}
    extra = {f"weights/{k}": v for k, v in (embed_weights or {}).items()}
    digest = write_artefact(out, model, prov, arrays, extra)
    log.info("exported %s to %s (sha256 %s)", cfg.label(), out, digest)
    return {"sha256": digest, "raw": raw, "probability": prob, "oof": oof, "p_oof": p_oof,
            "threshold": thr, "calibrator": cal, "folds": folds, "model": model}


def evaluation_calibration(
    X: np.ndarray, y: np.ndarray, subjects: np.ndarray, split: pd.DataFrame,
    scores: pd.DataFrame, cfg: Configuration, st: Settings, method: str = "platt",
    n_splits: int = 5, threshold: str | float = "youden",
) -> tuple[pd.DataFrame, list[dict]]:
    """Calibrated test probabilities of the study's evaluation folds.

    For every outer fold of ``split``: the calibrator (and threshold) is fitted exactly as
    at export, on out-of-fold scores of that fold's *training* subjects only, then applied
    to the fold's stored test scores (``scores``: the classify stage's rows of this
    configuration). A fold whose training part has fewer than 2 subjects (or one class)
    cannot be calibrated by subject: its rows keep ``probability`` NaN and the fold record
    says why. Returns the test rows (``fold, video_id, subject_id, frame, y, score,
    probability, threshold``) and one record per fold.
    """
    from neopain.learn.split import fold_subjects

    subjects = np.asarray(subjects).astype(str)
    y = np.asarray(y).astype(np.int8)
    rows, recs = [], []
    for fold in sorted(scores["fold"].unique()):
        part = scores[scores["fold"] == fold].copy()
        train_s, test_s = fold_subjects(split, fold)
        tr = np.isin(subjects, sorted(train_s))
        rec = {"fold": int(fold), "train_subjects": sorted(train_s),
               "test_subjects": sorted(test_s), "status": "ok"}
        part["probability"] = np.nan
        part["threshold"] = np.nan
        if len(train_s) < 2 or len(np.unique(y[tr])) < 2:
            rec["status"] = (f"not calibrated: {len(train_s)} training subject(s)"
                             if len(train_s) < 2 else "not calibrated: one class")
        else:
            Xtr, ytr, str_ = X[tr], y[tr], subjects[tr]

            def fit_score(a, b):
                return fit_configuration(Xtr[a], ytr[a], str_[a], cfg, st).score(Xtr[b])

            try:
                oof, _ = grouped_oof_scores(len(ytr), ytr, str_, fit_score, n_splits, st.seed)
                cal = fit_calibrator(oof, ytr, method)
                part["probability"] = cal.apply(part["score"].to_numpy())
                part["threshold"] = choose_threshold(ytr, cal.apply(oof), threshold)
            except ValueError as exc:
                rec["status"] = f"not calibrated: {exc}"
        recs.append(rec)
        rows.append(part[["fold", "video_id", "subject_id", "frame", "y", "score",
                          "probability", "threshold"]])
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["fold", "video_id", "subject_id", "frame", "y", "score", "probability",
                 "threshold"])
    return df, recs


# ----------------------------------------------------------------------------
# the export stage: from a finished study's results
# ----------------------------------------------------------------------------
def study_configuration(study: Mapping[str, Any], table5: pd.DataFrame | None
                        ) -> tuple[Configuration, str]:
    """The paper-path configuration to export and how it was chosen
    (``export.configuration``: ``best`` or a mapping backbone, layer, protocol, selector,
    k, classifier)."""
    exp = dict(study.get("export") or {})
    named = exp.get("configuration", "nested")
    if named == "nested":
        raise ValueError("export.configuration nested: exported by "
                         "neopain.deploy.videoexport.export_nested_study, not from Table 5")
    if named in (None, "best"):
        cfg = choose_configuration(table5, exp.get("protocol"))
        how = ("best Table 5 row (highest frame-level test accuracy, ties frame AUC"
               + (f", protocol {exp['protocol']}" if exp.get("protocol") else "")
               + "); chosen on test results as the paper does: optimistic")
        return cfg, how
    need = ["backbone", "layer", "protocol", "selector", "k", "classifier"]
    missing = [k for k in need if k not in named]
    if missing:
        raise ValueError(f"export.configuration: missing {', '.join(missing)} (or use 'best')")
    cfg = Configuration(str(named["backbone"]), str(named["layer"]), str(named["protocol"]),
                        str(named["selector"]), int(named["k"]), str(named["classifier"]))
    backbones = (study.get("extract") or {}).get("backbones") or {}
    checks = [
        (cfg.backbone in backbones, f"backbone {cfg.backbone!r} is not in extract.backbones"),
        (cfg.layer in (backbones.get(cfg.backbone) or {}).get("layers", []),
         f"layer {cfg.layer!r} is not extracted for {cfg.backbone!r}"),
        (cfg.protocol in (study.get("protocols") or {}), f"protocol {cfg.protocol!r} unknown"),
        (cfg.selector in (study.get("select") or {}).get("selectors", {}),
         f"selector {cfg.selector!r} is not in select.selectors"),
        (cfg.k in (study.get("select") or {}).get("k", []), f"k={cfg.k} is not in select.k"),
        (cfg.classifier in (study.get("classify") or {}).get("classifiers", {}),
         f"classifier {cfg.classifier!r} is not in classify.classifiers"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"export.configuration: {msg}")
    return cfg, "named in export.configuration"


def study_settings(study: Mapping[str, Any], cfg: Configuration) -> Settings:
    sel = dict((study.get("select") or {}).get("selectors", {}).get(cfg.selector) or {})
    cls = (study.get("classify") or {})
    return Settings(
        selector_params=sel,
        prefilter=dict((study.get("select") or {}).get("prefilter") or {"method": "none"}),
        classifier_params=dict((cls.get("classifiers") or {}).get(cfg.classifier) or {}),
        preset=cls.get("preset", "paper"), search=dict(cls.get("search") or {}),
        seed=int(study.get("seed", 0)))


def _metrics_record(metrics: pd.DataFrame, cfg: Configuration) -> dict:
    m = metrics[(metrics["backbone"] == cfg.backbone) & (metrics["layer"] == cfg.layer)
                & (metrics["protocol"] == cfg.protocol) & (metrics["selector"] == cfg.selector)
                & (metrics["k"] == cfg.k) & (metrics["classifier"] == cfg.classifier)]
    out = {}
    for _, r in m.iterrows():
        out[str(r["level"])] = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                                for k, v in r.items() if k not in (
                                    "backbone", "layer", "protocol", "selector", "k",
                                    "classifier", "level")}
    return out


def study_pipeline(study: Mapping[str, Any], backbone: str, layer: str,
                   sources: Mapping[str, str], features) -> tuple[dict, dict | None]:
    """The study's unfitted settings of one backbone for :func:`export_model` (weights
    pinned by the sha256 the feature table's provenance records) and the embedded
    weights (``export.embed_weights``) or None."""
    from neopain.features.backbones import get_spec, locate_weights

    if backbone == "actions":  # no network: features from the tracker's face mesh
        from neopain.deploy.actionsmodel import actions_pipeline

        return actions_pipeline(study, layer, sources, features), None
    exp = dict(study.get("export") or {})
    ex = dict(study.get("extract") or {})
    bcfg = {k: v for k, v in ((ex.get("backbones") or {}).get(backbone) or {}).items()
            if k != "layers"}
    spec = get_spec(backbone, bcfg)
    wkey = f"weights:{spec.weights_file}"
    if wkey not in sources:
        raise ValueError(f"{features}: its provenance names no {wkey!r}; cannot pin the "
                         "backbone weights")
    wsha = sources[wkey]
    bcfg["sha256"] = wsha           # the artefact pins the exact file it was trained with
    embed = None
    if exp.get("embed_weights"):
        wpath = locate_weights(get_spec(backbone, bcfg), ex.get("weights_dir"))
        embed = {spec.weights_file: Path(wpath).read_bytes()}
    pipeline = {
        "labels": list(study["labels"]), "positive_label": study["positive_label"],
        "fps_for_images": float(study.get("fps_for_images", 30.0)),
        "track": dict(study.get("track") or {}), "crop": dict(study.get("crop") or {}),
        "tracker_weights": {k[8:]: v for k, v in sources.items()
                            if k.startswith("weights:") and k != wkey},
        "backbone": {"name": backbone, "layer": layer, "cfg": bcfg,
                     "weights_file": spec.weights_file, "weights_sha256": wsha,
                     "input_size": spec.input_size, "dtype": ex.get("dtype", "float32"),
                     "fast_decode": bool(ex.get("fast_decode", True))},
    }
    return pipeline, embed


def export_study(study: Mapping[str, Any], *, table5: str | Path, metrics: str | Path,
                 features: str | Path, split: str | Path, scores: str | Path,
                 samples: str | Path, out: Mapping[str, str | Path]) -> dict[str, Any]:
    """The ``export`` rule: choose, refit, calibrate, write the artefact and its report.

    ``out`` keys: ``model``, ``card``, ``reliability`` (PNG), ``calibration_md``,
    ``calibration`` (Parquet of the evaluation folds' calibrated test rows),
    ``training_scores`` (Parquet: every training frame's score and probability from the
    fitted scikit-learn pipeline at export time, for round-trip checks).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.core import provenance as prov_mod
    from neopain.learn.calibrate import brier_score, expected_calibration_error, plot_reliability, \
        reliability_table
    from neopain.report.markdown import to_markdown
    from neopain.features.tables import feature_matrix

    exp = dict(study.get("export") or {})
    t5 = pq.read_table(table5).to_pandas()
    cfg, how = study_configuration(study, t5)
    st = study_settings(study, cfg)
    table = pq.read_table(features)
    if (table.schema.metadata or {}).get(b"neopain.backbone", cfg.backbone.encode()) \
            != cfg.backbone.encode():
        raise ValueError(f"{features}: not the {cfg.backbone} feature table")
    X = feature_matrix(table)
    y = np.asarray(table.column("y").to_pylist(), np.int8)
    subjects = np.asarray(table.column("subject_id").to_pylist(), dtype=object).astype(str)
    fprov = prov_mod.read_provenance(features)
    sources = dict(fprov.get("sources") or {})
    if cfg.backbone == "actions" and (study.get("actions") or {}).get("pose_regression"):
        raise ValueError(f"export: {cfg.label()} was evaluated with actions.pose_regression, "
                         "which a frame-level artefact does not hold; export it with "
                         "export.configuration: nested (the video-level artefact does)")
    from neopain.deploy.actionsmodel import check_exportable

    check_exportable(cfg.backbone, cfg.layer, level="frame")
    pipeline, embed = study_pipeline(study, cfg.backbone, cfg.layer, sources, features)
    wsha = pipeline["backbone"]["weights_sha256"]
    wfile = pipeline["backbone"]["weights_file"]
    mrec = _metrics_record(pq.read_table(metrics).to_pandas(), cfg)
    t5row = t5[(t5["backbone"] == cfg.backbone) & (t5["layer"] == cfg.layer)
               & (t5["protocol"] == cfg.protocol)]
    sheet_sha = prov_mod.sha256_file(samples)
    provenance = {
        "code_version": prov_mod.code_version(), "packages": prov_mod.package_versions(),
        "study_config_hash": prov_mod.config_hash(dict(study)),
        "training_data": {"sample_sheet": str(samples), "sample_sheet_sha256": sheet_sha,
                          "sample_sheet_sha256_in_features": sources.get("samples"),
                          "feature_table": str(features),
                          "feature_table_sha256": prov_mod.sha256_file(features)},
        "sources": sources,
        "weights": {wfile: wsha,
                    **{k[8:]: v for k, v in sources.items() if k.startswith("weights:")}},
        "configuration_choice": how,
        "evaluation": {"protocol": cfg.protocol, "metrics": mrec,
                       "table5_row": (t5row.iloc[0].to_dict() if len(t5row) else None),
                       "settings": dict(study.get("evaluate") or {}),
                       "note": "test-fold metrics of the study (subject-bootstrap CIs); the "
                               "exported model itself is refitted on all subjects"},
    }
    method = exp.get("calibration", "platt")
    n_splits = int(exp.get("calibration_splits", 5))
    thr_rule = exp.get("threshold", "youden")
    res = export_model(X, y, subjects, cfg, st, out["model"], pipeline=pipeline,
                       provenance=provenance, calibration=method,
                       calibration_splits=n_splits, threshold=thr_rule,
                       embed_weights=embed, name=exp.get("name"))

    # training scores (fitted scikit-learn pipeline, at export time)
    ts = pd.DataFrame({
        "video_id": table.column("video_id").to_pylist(), "subject_id": subjects,
        "frame": np.asarray(table.column("frame").to_pylist(), np.int32), "y": y,
        "score": res["raw"], "probability": res["probability"],
        "oof_score": res["oof"], "oof_probability": res["p_oof"]})
    p_rec = prov_mod.make_provenance("export", {"export": exp}, {"model": res["sha256"]},
                                     upstream=[fprov], params={"configuration": asdict(cfg)})
    prov_mod.write_table(pa.Table.from_pandas(ts, preserve_index=False),
                         out["training_scores"], p_rec)

    # reliability on the study's evaluation folds
    split_df = pq.read_table(split).to_pandas()
    sc = pq.read_table(scores).to_pandas()
    sc = sc[(sc["k"] == cfg.k) & (sc["classifier"] == cfg.classifier)]
    ev, fold_recs = evaluation_calibration(X, y, subjects, split_df, sc, cfg, st, method,
                                           n_splits, thr_rule)
    prov_mod.write_table(pa.Table.from_pandas(ev, preserve_index=False), out["calibration"],
                         p_rec)
    curves, lines = [], []
    cal_rows = ev[np.isfinite(ev["probability"].to_numpy(np.float64))]
    if len(cal_rows):
        curves.append(("test folds, calibrated on training subjects",
                       cal_rows["y"].to_numpy(), cal_rows["probability"].to_numpy()))
    score_is_proba = res["model"]["model"]["classifier"]["score"] == "proba"
    if score_is_proba and len(ev):
        curves.append(("test folds, uncalibrated", ev["y"].to_numpy(),
                       ev["score"].to_numpy()))
    summary_rows = []
    for label, yy, pp in curves:
        summary_rows.append({"predictions": label, "n": int(np.isfinite(pp).sum()),
                             "brier": brier_score(yy, pp),
                             "ece": expected_calibration_error(yy, pp)})
    plot_reliability(curves, out["reliability"],
                     f"Reliability on the evaluation folds\n{cfg.label()}")
    cal = res["calibrator"]
    lines.append(to_markdown(pd.DataFrame(summary_rows, columns=["predictions", "n", "brier",
                                                                 "ece"]),
                             "Calibration on the study's evaluation folds", [
        f"Configuration {cfg.label()}; calibration {method}, fitted per outer fold on "
        f"out-of-fold scores of that fold's training subjects only (inner folds grouped by "
        f"subject, up to {n_splits}), applied to the fold's test scores. ECE: 10 "
        "equal-width bins. Test subjects never enter a calibrator.",
        f"Exported calibrator (all subjects): {cal.to_dict()['method']} "
        + (f"a={cal.a:.6g}, b={cal.b:.6g}" if cal.method == "platt" else
           f"{len(cal.x)} thresholds" if cal.method == "isotonic" else "")
        + f"; decision threshold {res['threshold']:.4f} ({thr_rule}, on calibrated "
          "out-of-fold probabilities of the training subjects)."]))
    fr = pd.DataFrame([{"fold": r["fold"], "test_subjects": ",".join(r["test_subjects"]),
                        "n_train_subjects": len(r["train_subjects"]), "status": r["status"]}
                       for r in fold_recs])
    lines.append(to_markdown(fr, "Evaluation folds"))
    if len(cal_rows):
        bins = reliability_table(cal_rows["y"], cal_rows["probability"])
        bins[["bin", "n"]] = bins[["bin", "n"]].astype(str)
        lines.append(to_markdown(bins, "Reliability bins (calibrated test predictions)"))
    prov_mod.write_text("\n".join(lines), out["calibration_md"])

    # model card
    card = [f"# Exported model: {res['model']['name']}", "",
            f"* artefact: `{out['model']}` (sha256 `{res['sha256']}`, format {FORMAT} "
            f"version {FORMAT_VERSION})",
            f"* configuration: {cfg.label()} -- {how}",
            f"* refitted on all {len(np.unique(subjects))} subjects / {len(y)} keyframes of "
            f"the study (selector, scaler, classifier on these rows only)",
            f"* backbone weights: `{wfile}` sha256 `{wsha}`"
            + (" (embedded)" if embed else " (referenced, verified at load)"),
            f"* calibration: {method}, {n_splits}-fold grouped by subject on the training "
            f"subjects; threshold {res['threshold']:.4f} ({thr_rule})",
            f"* training sample sheet sha256 `{sheet_sha}`; code {prov_mod.code_version()}",
            "", "## Evaluation of this configuration (study test folds)", ""]
    for level, rec in mrec.items():
        def ci(m):
            v, lo, hi = rec.get(m), rec.get(f"{m}_lo"), rec.get(f"{m}_hi")
            if v is None:
                return "n/a"
            return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
        card.append(f"* {level}: accuracy {ci('accuracy')}, AUC {ci('auc')}, n {rec.get('n')},"
                    f" subjects {rec.get('n_subjects')}")
    card += ["", "Predict: `neopain predict " + str(out["model"]) + " VIDEO... --out DIR`", ""]
    prov_mod.write_text("\n".join(card), out["card"])
    return {**res, "configuration": cfg, "evaluation": ev, "folds_eval": fold_recs}


def export_inputs(export_cfg: Mapping[str, Any], layer_targets, protocols, selectors,
                  nested_tables=(), nested_protocols=(), nested_on: bool = False
                  ) -> dict[str, list[str]]:
    """The ``export`` rule's inputs: with ``nested`` (the default) the nested search's
    feature tables (and, when the nested stage runs, its summary and predictions); a
    named configuration's files; or every layer's (``best``: chosen from Table 5 when
    the job runs)."""
    named = export_cfg.get("configuration", "nested")
    paper = {"table5": "results/evaluation/table5.parquet",
             "metrics": "results/evaluation/metrics.parquet", "summary": [], "nested": []}
    if named == "nested":
        return {"table5": [], "metrics": [], "scores": [], "splits": [],
                "features": [f"results/features/{b}/{layer}/features.parquet"
                             for b, layer in nested_tables],
                "summary": ["results/evaluation/summary.parquet"] if nested_on else [],
                "nested": ([f"results/nested/{p}/predictions.parquet"
                            for p in nested_protocols] if nested_on else [])}
    if named not in (None, "best"):
        b, layer, p, s = (named["backbone"], named["layer"], named["protocol"],
                          named["selector"])
        return {**paper, "features": [f"results/features/{b}/{layer}/features.parquet"],
                "scores": [f"results/scores/{b}/{layer}/{p}/{s}.parquet"],
                "splits": [f"results/splits/{p}.parquet"]}
    return {**paper,
        "features": [f"results/features/{b}/{layer}/features.parquet"
                     for b, layer in layer_targets],
        "scores": [f"results/scores/{b}/{layer}/{p}/{s}.parquet"
                   for b, layer in layer_targets for p in protocols for s in selectors],
        "splits": [f"results/splits/{p}.parquet" for p in protocols],
    }
