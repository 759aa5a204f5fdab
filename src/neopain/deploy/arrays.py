"""Fitted scikit-learn models as plain arrays, and their scoring in NumPy (no pickles).

:func:`serialise_pipeline` turns a fitted ``[scaler] -> classifier`` into a JSON spec and
named arrays (the artefact's ``arrays/<name>.npy`` members, :mod:`neopain.deploy.artefact`):
GaussianNB ``theta_``/``var_``/``class_prior_``; kNN's training matrix (scaled) and
labels; SVC support vectors, dual coefficients, intercept (and gamma / degree / coef0 in
the spec); random forests as concatenated scikit-learn ``tree_`` arrays
(``children_left/right``, ``feature``, ``threshold``, ``value``, one offset per tree);
linear models as ``coef``/``intercept``.

:class:`ScoreModel` re-implements ``predict_proba`` / ``decision_function`` of these
models in NumPy, following scikit-learn's own operation order, so scores match the fitted
scikit-learn pipeline (random forests and naive Bayes bit for bit; SVM decision values to
~1e-15; kNN except for exact distance ties, which neither side orders meaningfully).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from neopain.deploy.artefact import ArtefactError


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


# ----------------------------------------------------------------------------
# their scoring in NumPy
# ----------------------------------------------------------------------------
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
