"""Statistics that respect subjects: a subject-clustered DeLong test and ROC bands.

Frames (and videos) of one infant are correlated; treating 2,286 frames of 25 subjects
as independent makes every AUC difference "significant".  Here the subject is the
independent unit:

* :func:`clustered_delong` -- the AUC covariance of Obuchowski (1997, Biometrics 53:
  567-578), the DeLong estimator with each positive's placement among the negatives
  (and each negative's among the positives) summed per subject (cluster) before the
  variance is taken.  It equals DeLong's when every subject contributes one row (up to
  the factor I/(I-1) against DeLong's per-class M/(M-1), N/(N-1)), and it does not shrink
  when a subject's rows are repeated, which DeLong's does.
* :func:`roc_band` -- a pointwise percentile band of the ROC curve (true-positive rate
  at fixed false-positive rates) from the same subject bootstrap as the CIs.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from neopain.learn.delong import midrank


def _placements(y: np.ndarray, S: np.ndarray):
    """Per score row: placement of each positive among the negatives, of each negative
    among the positives (ties count one half) and the AUCs."""
    pos, neg = S[:, y == 1], S[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = np.array([midrank(r) for r in pos])
    ty = np.array([midrank(r) for r in neg])
    tz = np.array([midrank(r) for r in np.hstack([pos, neg])])
    v_pos = (tz[:, :m] - tx) / n
    v_neg = 1.0 - (tz[:, m:] - ty) / m
    return v_pos, v_neg, v_pos.mean(axis=1)


def clustered_delong_components(y, scores, clusters):
    """AUCs and their subject-clustered covariance (Obuchowski 1997) for the rows of
    ``scores`` (k x n) with labels ``y`` and cluster (subject) ids ``clusters``."""
    y = np.asarray(y).astype(int)
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    c = np.asarray(clusters, dtype=str)
    if not ((y == 1).any() and (y == 0).any()):
        raise ValueError("the clustered DeLong test needs both classes in y")
    uniq, cidx = np.unique(c, return_inverse=True)
    n_clusters = uniq.size
    if n_clusters < 2:
        raise ValueError("the clustered DeLong test needs at least two subjects")
    v_pos, v_neg, auc = _placements(y, S)
    c_pos, c_neg = cidx[y == 1], cidx[y == 0]
    M, N = c_pos.size, c_neg.size
    k = S.shape[0]
    X = np.zeros((k, n_clusters))
    Y = np.zeros((k, n_clusters))
    for i in range(k):
        X[i] = np.bincount(c_pos, weights=v_pos[i], minlength=n_clusters)
        Y[i] = np.bincount(c_neg, weights=v_neg[i], minlength=n_clusters)
    m_i = np.bincount(c_pos, minlength=n_clusters)
    n_i = np.bincount(c_neg, minlength=n_clusters)
    dX = X - m_i[None, :] * auc[:, None]
    dY = Y - n_i[None, :] * auc[:, None]
    f = n_clusters / (n_clusters - 1.0)
    s10 = f * dX @ dX.T / M ** 2
    s01 = f * dY @ dY.T / N ** 2
    s11 = f * dX @ dY.T / (M * N)
    return auc, s10 + s01 + s11 + s11.T


def clustered_delong(y, score_a, score_b, clusters) -> dict[str, float]:
    """Two-sided subject-clustered DeLong test of AUC(a) == AUC(b) on the same rows."""
    auc, cov = clustered_delong_components(y, np.vstack([score_a, score_b]), clusters)
    diff = auc[0] - auc[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (np.inf * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = 2.0 * stats.norm.sf(abs(z))
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": float(diff),
            "se": float(np.sqrt(max(var, 0.0))), "z": float(z), "p": float(p),
            "n_subjects": int(np.unique(np.asarray(clusters, dtype=str)).size)}


def roc_band(y, score, subjects, n_boot: int = 200, seed: int = 0, level: float = 0.95,
             grid: int = 101) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr grid, lower tpr, upper tpr): pointwise percentile band of the ROC curve over
    ``n_boot`` subject-resampled replicates (replicates with one class are skipped;
    NaN bands when fewer than 10 replicates are usable)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    uniq, sidx = np.unique(np.asarray(subjects, dtype=str), return_inverse=True)
    rows = [np.flatnonzero(sidx == i) for i in range(uniq.size)]
    fpr_grid = np.linspace(0.0, 1.0, grid)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        idx = np.concatenate([rows[i] for i in rng.integers(0, uniq.size, uniq.size)])
        yb = y[idx]
        if yb.min() == yb.max():
            continue
        fpr, tpr, _ = roc_curve(yb, score[idx])
        curves.append(np.interp(fpr_grid, fpr, tpr))
    if len(curves) < 10:
        nan = np.full(grid, np.nan)
        return fpr_grid, nan, nan
    a = (1.0 - level) / 2.0
    c = np.vstack(curves)
    return fpr_grid, np.quantile(c, a, axis=0), np.quantile(c, 1 - a, axis=0)
