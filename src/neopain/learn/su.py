"""Symmetric uncertainty ranking with Fayyad-Irani MDL discretisation (Weka 3.6).

``SymmetricUncertainty`` -- ``weka.attributeSelection.SymmetricalUncertAttributeEval``:
each numeric column is discretised like Weka's supervised ``Discretize`` filter
(as that evaluator configures it: Fayyad & Irani's MDL criterion, "better
encoding"): recursively, the binary cut minimising the class entropy of the two
parts is searched among the midpoints between consecutive distinct sorted values
(first minimum wins), and accepted when
``gain > (log2(n_cuts) + log2(3^k - 2) - k*E + k1*E1 + k2*E2) / N``, with
``n_cuts`` the number of candidate cuts of the part, ``N`` its size, ``E`` its
class entropy over ``k`` classes present and ``E1``, ``E2``, ``k1``, ``k2`` those of
the two sides. Then ``SU = 2 * (H(C) - H(C|X)) / (H(C) + H(X))`` on the bins; a
column without any accepted cut scores 0. The search is vectorised over all
columns of a block and all open intervals at once (cumulative class counts over
the sorted values), with entropies evaluated in Weka's operation order so that
tied candidate cuts resolve as they do in Weka. The bins are the intervals of
sorted values between accepted cuts (Weka bins by ``value <= cut``; the two only
differ if a midpoint rounds onto one of its two neighbouring doubles).
"""

from __future__ import annotations

import numpy as np

from neopain.learn.ranking import BLOCK_BYTES, WEKA_EPS, RankingSelector, positive_or_none

_LOG2 = np.log(2.0)


class SymmetricUncertainty(RankingSelector):
    """Symmetric uncertainty ranking, Weka 3.6 ``SymmetricalUncertAttributeEval``.

    Parameters
    ----------
    n_features_to_select : int, default 15
        Number of top-ranked features kept by ``transform``.
    column_chunk_size : int or None
        Columns discretised together; None sizes the block from a ~256 MB budget.

    Attributes
    ----------
    scores_, ranking_, classes_, n_bins_ (bins of each discretised feature),
    n_features_in_ (and feature_names_in_).
    """

    def __init__(self, n_features_to_select=15, column_chunk_size=None):
        self.n_features_to_select = n_features_to_select
        self.column_chunk_size = column_chunk_size

    def _score(self, X, codes, n_classes):
        positive_or_none(self.column_chunk_size, "column_chunk_size")
        scores, n_bins = su_scores(X, codes, column_chunk_size=self.column_chunk_size)
        self.n_bins_ = n_bins
        return scores


def _xlogx_table(n):
    t = np.arange(n + 1, dtype=np.float64)
    out = np.zeros(n + 1)
    out[1:] = t[1:] * np.log(t[1:])
    return out


def _entropy(counts, sizes, lnf):
    """Weka ``ContingencyTables.entropy`` (bits) of class counts ``(C, m)``."""
    acc = np.zeros(counts.shape[1])
    for c in range(counts.shape[0]):
        acc -= lnf[counts[c]]
    return (acc + lnf[sizes]) / (sizes * _LOG2)


def _cond_entropy(left, n_left, right, n_right, lnf):
    """Weka ``ContingencyTables.entropyConditionedOnRows`` (bits) of 2 x C tables.

    ``left``/``right`` are class counts ``(C, m)`` of the two rows, ``n_left``/
    ``n_right`` their sums; operations follow Weka's order.
    """
    acc = np.zeros(left.shape[1])
    for side, size in ((left, n_left), (right, n_right)):
        for c in range(side.shape[0]):
            acc += lnf[side[c]]
        acc -= lnf[size]
    return -acc / ((n_left + n_right) * _LOG2)


def _mdl_block(Xt, codes, n_classes, lnf):
    """Fayyad-Irani MDL cuts of the rows of ``Xt`` (one row per feature).

    Returns ``(cum, cut_col, cut_at)``: cumulative class counts over each
    feature's sorted values, ``cum[c, j * (n + 1) + i]`` = instances of class
    ``c`` among the ``i`` smallest values of feature ``j``, and the accepted
    cuts as (feature, number of sorted values left of the cut).
    """
    q, n = Xt.shape
    order = np.argsort(Xt, axis=1, kind="stable")
    xs = np.take_along_axis(Xt, order, axis=1)
    ys = codes[order]
    count_t = np.int32 if n < 2**31 - 1 else np.int64
    cum = np.zeros((n_classes, q, n + 1), dtype=count_t)
    for c in range(n_classes):
        np.cumsum(ys == c, axis=1, dtype=count_t, out=cum[c, :, 1:])
    cum = cum.reshape(n_classes, q * (n + 1))
    del ys, order

    # candidate cuts: between sorted positions i and i+1 holding distinct values
    boundary = xs[:, :-1] < xs[:, 1:]  # q x (n-1)
    del xs
    rank = np.zeros((q, n), dtype=np.intp)  # rank[j, i] = candidates at positions < i
    np.cumsum(boundary, axis=1, out=rank[:, 1:])
    col_base = np.concatenate(([0], np.cumsum(rank[:, -1])[:-1]))
    cand_pos = (np.flatnonzero(boundary.ravel()) % max(n - 1, 1)).astype(np.intp)
    del boundary

    seg_col = np.arange(q)
    seg_lo = np.zeros(q, dtype=np.intp)
    seg_hi = np.full(q, n, dtype=np.intp)
    cut_col, cut_at = [], []
    while seg_col.size:
        # candidate cuts strictly inside each open interval [lo, hi)
        n_cuts = rank[seg_col, seg_hi - 1] - rank[seg_col, seg_lo]
        keep = n_cuts > 0
        seg_col, seg_lo, seg_hi, n_cuts = (seg_col[keep], seg_lo[keep], seg_hi[keep],
                                           n_cuts[keep])
        if not seg_col.size:
            break
        first = col_base[seg_col] + rank[seg_col, seg_lo]
        offs = np.concatenate(([0], np.cumsum(n_cuts)[:-1]))
        sid = np.repeat(np.arange(seg_col.size), n_cuts)
        pos = cand_pos[np.arange(sid.size) + (first - offs)[sid]]  # last index on the left
        row = seg_col * (n + 1)
        lo_counts = cum[:, row + seg_lo]
        prior = cum[:, row + seg_hi] - lo_counts
        size = seg_hi - seg_lo
        left = cum[:, row[sid] + pos + 1] - lo_counts[:, sid]
        n_left = pos + 1 - seg_lo[sid]
        right = prior[:, sid] - left
        ent = _cond_entropy(left, n_left, right, size[sid] - n_left, lnf)

        # first candidate reaching the minimum (Weka keeps a strictly better one)
        best_ent = np.minimum.reduceat(ent, offs)
        idx = np.arange(sid.size)
        best = np.minimum.reduceat(np.where(ent == best_ent[sid], idx, sid.size), offs)

        prior_ent = _entropy(prior, size, lnf)
        bl, br, nl = left[:, best], right[:, best], n_left[best]
        k_all = (prior > 0).sum(axis=0)
        k_left = (bl > 0).sum(axis=0)
        k_right = (br > 0).sum(axis=0)
        gain = prior_ent - best_ent
        delta = (np.log(3.0 ** k_all - 2) / _LOG2
                 - (k_all * prior_ent - k_right * _entropy(br, size - nl, lnf)
                    - k_left * _entropy(bl, nl, lnf)))
        accept = (gain > 0) & (gain > (np.log(n_cuts) / _LOG2 + delta) / size)

        at = pos[best[accept]] + 1
        col, lo, hi = seg_col[accept], seg_lo[accept], seg_hi[accept]
        cut_col.append(col)
        cut_at.append(at)
        seg_col = np.concatenate((col, col))
        seg_lo = np.concatenate((lo, at))
        seg_hi = np.concatenate((at, hi))
        big = seg_hi - seg_lo >= 2
        seg_col, seg_lo, seg_hi = seg_col[big], seg_lo[big], seg_hi[big]
    empty = np.zeros(0, dtype=np.intp)
    return (cum, np.concatenate(cut_col) if cut_col else empty,
            np.concatenate(cut_at) if cut_at else empty)


def su_scores(X, codes, *, column_chunk_size=None):
    """Symmetric uncertainty of each column of ``X`` after MDL discretisation.

    Returns ``(scores, n_bins)``. See the module docstring for the semantics.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    codes = np.asarray(codes, dtype=np.intp)
    n, p = X.shape
    n_classes = int(codes.max()) + 1
    lnf = _xlogx_table(n)
    class_counts = np.bincount(codes, minlength=n_classes)
    col_ent = lnf[class_counts].sum() - lnf[n]  # -N * H(C), in nats
    # per value of a block: sorted copy, order, boundary/rank and candidate
    # arrays, class counts, entropies ... about 8 * (6 + 3 * C) bytes
    block = column_chunk_size or max(1, BLOCK_BYTES // (8 * (n + 1) * (6 + 3 * n_classes)))
    scores = np.zeros(p)
    n_bins = np.ones(p, dtype=np.intp)
    for b0 in range(0, p, block):
        Xt = np.array(X[:, b0:b0 + block].T, dtype=np.float64, order="C")
        q = Xt.shape[0]
        cum, cut_col, cut_at = _mdl_block(Xt, codes, n_classes, lnf)
        if not cut_col.size:
            continue
        # bins = intervals between consecutive cuts (plus 0 and n) of each feature
        cols = np.concatenate((np.arange(q), np.arange(q), cut_col))
        edges = np.concatenate((np.zeros(q, dtype=np.intp), np.full(q, n), cut_at))
        order = np.lexsort((edges, cols))
        cols, edges = cols[order], edges[order]
        inner = cols[:-1] == cols[1:]
        bin_col = cols[:-1][inner]
        lo = bin_col * (n + 1) + edges[:-1][inner]
        hi = bin_col * (n + 1) + edges[1:][inner]
        counts = cum[:, hi] - cum[:, lo]  # C x bins
        cell = lnf[counts].sum(axis=0)
        row = lnf[edges[1:][inner] - edges[:-1][inner]]
        starts = np.flatnonzero(np.r_[True, bin_col[1:] != bin_col[:-1]])
        row_sum = np.add.reduceat(row, starts)
        cond = np.add.reduceat(cell, starts) - row_sum  # -N * H(C|X)
        row_ent = row_sum - lnf[n]  # -N * H(X)
        gain = col_ent - cond
        with np.errstate(divide="ignore", invalid="ignore"):
            su = 2.0 * gain / (col_ent + row_ent)
        scores[b0:b0 + q] = np.where(np.abs(row_ent) < WEKA_EPS, 0.0, su)
        n_bins[b0:b0 + q] = np.diff(np.r_[starts, bin_col.size])
    return scores, n_bins
