"""DeLong's test of two AUCs on the same test rows.

:func:`delong_test` compares the AUCs of two score vectors on the same test
rows (DeLong, DeLong & Clarke-Pearson 1988, with the fast midrank algorithm of
Sun & Xu 2014): two-sided p-value of the normal statistic. The subject-clustered
version is :func:`neopain.learn.clustered.clustered_delong`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def midrank(x):
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = x.size
    ranks = np.empty(n)
    # midranks of runs of equal values (1-based)
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    mid = (starts + ends + 1) / 2.0
    ranks_sorted = np.repeat(mid, ends - starts)
    ranks[order] = ranks_sorted
    return ranks


def delong_components(y, scores):
    """AUCs and DeLong covariance of the rows of ``scores`` (k x n) for labels ``y``.

    Sun & Xu (2014): placement values from midranks of the positives, the
    negatives and all rows, O(k n log n).
    """
    y = np.asarray(y).astype(int)
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = S[:, y == 1], S[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes in y")
    k = S.shape[0]
    tx = np.array([midrank(r) for r in pos])
    ty = np.array([midrank(r) for r in neg])
    tz = np.array([midrank(r) for r in np.hstack([pos, neg])])
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n          # placement of each positive among negatives
    v10 = 1.0 - (tz[:, m:] - ty) / m    # placement of each negative among positives
    sx = np.cov(v01) if k > 1 else np.array([[np.var(v01, ddof=1)]])
    sy = np.cov(v10) if k > 1 else np.array([[np.var(v10, ddof=1)]])
    cov = np.atleast_2d(sx) / m + np.atleast_2d(sy) / n
    return auc, cov


def delong_test(y, score_a, score_b) -> dict[str, float]:
    """Two-sided DeLong test of AUC(a) == AUC(b) on the same test rows."""
    auc, cov = delong_components(y, np.vstack([score_a, score_b]))
    diff = auc[0] - auc[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 0:
        z, p = (0.0, 1.0) if diff == 0 else (np.inf * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = 2.0 * stats.norm.sf(abs(z))
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": float(diff),
            "se": float(np.sqrt(max(var, 0.0))), "z": float(z), "p": float(p)}
