"""Probability calibration fitted on training subjects, decision thresholds, reliability.

A classifier's score (``neopain.learn.classify.positive_score``: an SVM decision value, or a
predicted probability for naive Bayes, kNN and random forests) is mapped to a calibrated
probability of pain by a one-dimensional calibrator fitted on *out-of-fold* scores of
the training subjects (:func:`grouped_oof_scores`: folds grouped by subject, so a
subject's frames are never scored by a model that saw that subject; test subjects are
never used):

* ``platt`` -- Platt (1999) scaling ``p = 1 / (1 + exp(a * s + b))``, fitted by maximum
  likelihood with Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``
  (as in Lin, Lin & Weng 2007 and scikit-learn's ``CalibratedClassifierCV``), L-BFGS on
  the exact gradient;
* ``isotonic`` -- the non-decreasing step fit of scikit-learn's ``IsotonicRegression``
  (clipped to [0, 1] and to the fitted score range), applied by linear interpolation
  between its thresholds (as scikit-learn does);
* ``none`` -- scores are used as they are (probabilistic classifiers only: an SVM
  decision value is not a probability and is refused).

:class:`Calibrator` is plain data (a method and a few floats) so it can be stored in the
exported artefact (``neopain.deploy.artefact``) and applied bit-identically elsewhere.

The decision threshold (:func:`choose_threshold`) is chosen on the same out-of-fold
calibrated probabilities of the training subjects: ``youden`` maximises sensitivity +
specificity - 1 over the observed probabilities (``pred = p >= t``; ties: the threshold
nearest 0.5), or a fixed number.

Reliability (:func:`reliability_table`): ``n_bins`` equal-width bins of [0, 1] (the last
one closed), per bin the mean predicted probability and the observed frequency of pain;
the expected calibration error ``ECE = sum_b n_b / N * |freq_b - conf_b|``; the Brier
score ``mean((p - y)^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

METHODS = ("platt", "isotonic", "none")

__all__ = ["METHODS", "Calibrator", "fit_calibrator", "fit_platt", "brier_score",
           "expected_calibration_error", "reliability_table", "choose_threshold",
           "grouped_oof_scores", "plot_reliability"]


def _expit_neg(f: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(f))`` without overflow."""
    f = np.asarray(f, dtype=np.float64)
    out = np.empty_like(f)
    pos = f >= 0
    e = np.exp(-f[pos])
    out[pos] = e / (1.0 + e)
    out[~pos] = 1.0 / (1.0 + np.exp(f[~pos]))
    return out


@dataclass(frozen=True)
class Calibrator:
    """A fitted score -> probability map (plain data; see the module docstring)."""

    method: str
    a: float = 0.0                      #: platt
    b: float = 0.0                      #: platt
    x: tuple[float, ...] = field(default=())   #: isotonic thresholds (scores)
    y: tuple[float, ...] = field(default=())   #: isotonic values (probabilities)
    n: int = 0                          #: rows it was fitted on
    n_pos: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r}: one of {', '.join(METHODS)}")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores`` (NaN stays NaN)."""
        s = np.asarray(scores, dtype=np.float64)
        out = np.full(s.shape, np.nan)
        ok = np.isfinite(s)
        if self.method == "platt":
            out[ok] = _expit_neg(self.a * s[ok] + self.b)
        elif self.method == "isotonic":
            x, y = np.asarray(self.x, np.float64), np.asarray(self.y, np.float64)
            out[ok] = np.interp(np.clip(s[ok], x[0], x[-1]), x, y)
        else:
            out[ok] = s[ok]
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "a": self.a, "b": self.b, "x": list(self.x),
                "y": list(self.y), "n": self.n, "n_pos": self.n_pos}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(method=d["method"], a=float(d.get("a", 0.0)), b=float(d.get("b", 0.0)),
                   x=tuple(float(v) for v in d.get("x", ())),
                   y=tuple(float(v) for v in d.get("y", ())), n=int(d.get("n", 0)),
                   n_pos=int(d.get("n_pos", 0)))


def fit_platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's ``(a, b)`` for ``p = 1 / (1 + exp(a s + b))`` (smoothed targets)."""
    from scipy.optimize import minimize

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(int)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    scale = float(np.std(s)) or 1.0   # optimise on a standardised score, map back

    z = s / scale

    def loss(ab):
        f = ab[0] * z + ab[1]
        L = np.logaddexp(0.0, f)
        p = _expit_neg(f)
        val = float(np.sum(L - (1.0 - t) * f))
        g = t - p
        return val, np.array([float(np.sum(g * z)), float(np.sum(g))])

    x0 = np.array([0.0, float(np.log((n_neg + 1.0) / (n_pos + 1.0)))])
    res = minimize(loss, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
    a, b = res.x
    return float(a / scale), float(b)


def fit_calibrator(scores: np.ndarray, y: np.ndarray, method: str = "platt") -> Calibrator:
    """Fit ``method`` on (out-of-fold) scores and labels; NaN scores are left out."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(int)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}: one of {', '.join(METHODS)}")
    n, n_pos = int(s.size), int((y == 1).sum())
    if method == "none":
        return Calibrator("none", n=n, n_pos=n_pos)
    if n == 0 or len(np.unique(y)) < 2:
        raise ValueError(f"calibration ({method}) needs out-of-fold scores of both classes; "
                         f"got {n} score(s), {n_pos} positive")
    if method == "platt":
        a, b = fit_platt(s, y)
        return Calibrator("platt", a=a, b=b, n=n, n_pos=n_pos)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
    return Calibrator("isotonic", x=tuple(map(float, iso.X_thresholds_)),
                      y=tuple(map(float, iso.y_thresholds_)), n=n, n_pos=n_pos)


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str | float = "youden") -> float:
    """The decision threshold on probabilities ``p`` (``pred = p >= t``)."""
    if not isinstance(rule, str):
        t = float(rule)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold {t} is not in [0, 1]")
        return t
    if rule != "youden":
        raise ValueError(f"threshold rule {rule!r}: 'youden' or a number in [0, 1]")
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    y, p = y[ok], p[ok]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    cand = np.unique(p)
    # pred = p >= t: positives with p >= t, negatives with p < t
    order = np.sort(p[y == 1])
    neg = np.sort(p[y == 0])
    tp = n_pos - np.searchsorted(order, cand, side="left")
    tn = np.searchsorted(neg, cand, side="left")
    j = tp / n_pos + tn / n_neg - 1.0
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(cand[best[np.argmin(np.abs(cand[best] - 0.5))]])


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    return float(np.mean((p[ok] - y[ok]) ** 2)) if ok.any() else float("nan")


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per equal-width bin of [0, 1]: ``lo, hi, n, confidence`` (mean p), ``frequency``
    (observed share of positives); empty bins have NaN means."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(p)
    y, p = y[ok], p[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({"bin": b, "lo": edges[b], "hi": edges[b + 1], "n": int(m.sum()),
                     "confidence": float(p[m].mean()) if m.any() else float("nan"),
                     "frequency": float(y[m].mean()) if m.any() else float("nan")})
    return pd.DataFrame(rows)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    t = reliability_table(y, p, n_bins)
    n = t["n"].sum()
    if n == 0:
        return float("nan")
    used = t[t["n"] > 0]
    return float(np.sum(used["n"] / n * np.abs(used["frequency"] - used["confidence"])))


def grouped_oof_scores(
    n_rows: int, y: np.ndarray, groups: np.ndarray,
    fit_score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_splits: int = 5, seed: int = 0,
) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold scores with folds grouped by subject (``groups``).

    ``fit_score(train_idx, test_idx)`` fits the whole configuration (selector included)
    on the training rows and returns the scores of the test rows. Folds:
    ``StratifiedGroupKFold(min(n_splits, n_groups), shuffle, seed)``; a fold whose
    training part lacks a class is skipped (its rows stay NaN). Returns the scores and
    one record per fold (its training and held-out subjects, rows, whether it ran).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).astype(int)
    groups = np.asarray(groups).astype(str)
    uniq = np.unique(groups)
    if uniq.size < 2:
        raise ValueError(f"calibration needs at least 2 training subjects for folds grouped "
                         f"by subject; found {uniq.size}")
    k = int(min(n_splits, uniq.size))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = np.full(n_rows, np.nan)
    folds = []
    for f, (tr, te) in enumerate(cv.split(np.zeros(n_rows), y, groups)):
        rec = {"fold": f, "train_subjects": sorted(set(groups[tr])),
               "held_out_subjects": sorted(set(groups[te])), "n_train": int(tr.size),
               "n_held_out": int(te.size)}
        assert not set(rec["train_subjects"]) & set(rec["held_out_subjects"])
        if len(np.unique(y[tr])) < 2:
            rec["skipped"] = "training part holds one class"
        else:
            out[te] = fit_score(tr, te)
            rec["skipped"] = None
        folds.append(rec)
    return out, folds


def plot_reliability(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path,
                     title: str, n_bins: int = 10) -> None:
    """Reliability diagram (matplotlib Agg): observed frequency vs mean predicted
    probability per bin for each (label, y, p), with a histogram of p below."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.0, 6.0), dpi=110, sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfectly calibrated")
    for label, y, p in curves:
        t = reliability_table(y, p, n_bins)
        t = t[t["n"] > 0]
        ax.plot(t["confidence"], t["frequency"], marker="o", lw=1.5,
                label=f"{label} (Brier {brier_score(y, p):.3f}, "
                      f"ECE {expected_calibration_error(y, p, n_bins):.3f})")
        pp = np.asarray(p, dtype=np.float64)
        axh.hist(pp[np.isfinite(pp)], bins=np.linspace(0, 1, n_bins + 1), histtype="step",
                 lw=1.5)
    if not curves:
        ax.text(0.5, 0.5, "no calibrated test predictions", ha="center", va="center")
    ax.set(ylabel="observed frequency of pain", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    axh.set(xlabel="predicted probability of pain", ylabel="frames")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
