"""Feature selectors reproducing Weka 3.6's ReliefF and Symmetric Uncertainty rankers.

Both classes are scikit-learn feature selectors (``SelectorMixin`` +
``BaseEstimator``): ``fit(X, y)`` scores every column, ``scores_`` holds one
float64 score per input feature, ``ranking_`` the feature indices by descending
score (ties: lower index first), and the support mask keeps the first
``n_features_to_select`` of the ranking (clipped to the number of features), so
``transform`` and ``get_feature_names_out`` work inside a ``Pipeline``.
Inputs must be finite floats; ``y`` must hold at least two classes. The classes
are those present in ``y`` (Weka counts the values declared in the ARFF header;
a declared but absent class would only change ReliefF's "more than two
classes" rule).

``ReliefF`` -- ``weka.attributeSelection.ReliefFAttributeEval`` with its
defaults (every instance used, ``k`` = 10 neighbours, equal neighbour influence):

* attribute difference ``diff_a(i, j) = |norm(x_ia) - norm(x_ja)|`` with
  ``norm(x) = (x - min_a) / (max_a - min_a)``, the range taken from the training
  data; an attribute whose range is below 1e-6 (Weka's ``Utils.eq``) has
  difference 0;
* instance distance = sum of the attribute differences (no square root, no
  distance weighting);
* for each instance ``i`` (class ``c``): the ``k`` nearest hits (same class, ``i``
  itself excluded) and the ``k`` nearest misses of every other class ``o``
  (fewer when a class has fewer instances); the score of ``a`` accumulates
  ``-mean_hits diff_a + sum_o w_o * mean_misses(o) diff_a`` with
  ``w_o = P(o) / (1 - P(c))`` for more than two classes and ``w_o = 1`` for two,
  ``P`` the class frequencies of the training data; the sum over instances is
  divided by their number ``m``;
* neighbours are kept as Weka's ``findKHitMiss`` keeps them: instances scanned
  in index order, a candidate enters a full list only when strictly closer than
  the current worst (the first of equal worsts is the one replaced). Without a
  tie at the k-th distance this is simply the k smallest distances; with such a
  tie the scan is replayed exactly for that instance and class, so the result
  is deterministic and equal to Weka's.

Distances are computed exactly (``scipy.spatial.distance.cdist`` cityblock adds
the attribute differences in attribute order, as Weka does): as one symmetric
matrix when it fits in ~256 MB, else in blocks of rows, optionally in threads.
The score accumulation runs over tiles of rows x columns, so memory stays
bounded for very wide matrices, and its order does not depend on the block
sizes: chunked and unchunked runs give identical scores. The cost is dominated
by the ``n^2 p / 2`` attribute differences of the distances.

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

``SELECTORS`` maps the workflow's selector names to the classes;
``make_selector(name, k, **params)`` builds one.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .split import fold_subjects
from .tables import feature_matrix

log = logging.getLogger(__name__)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

__all__ = ["ReliefF", "SymmetricUncertainty", "SELECTORS", "make_selector"]

#: Weka's ``Utils.SMALL``: two doubles closer than this are "equal".
WEKA_EPS = 1e-6
#: Target size of one working block (distance rows, gathered columns, ...).
BLOCK_BYTES = 256 * 2**20
_LOG2 = np.log(2.0)


# ----------------------------------------------------------------------------
# shared base
# ----------------------------------------------------------------------------
class _RankingSelector(SelectorMixin, BaseEstimator):
    """Common ``fit``/support logic: subclasses implement ``_score``."""

    def fit(self, X, y):
        """Score every feature of ``X`` against the class labels ``y``; returns self."""
        k = self.n_features_to_select
        if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(
                f"{type(self).__name__}: n_features_to_select must be a positive "
                f"integer, got {k!r}")
        X, y = self._check_input(X, y)
        classes, codes = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least two classes in y; got 1 class: "
                f"{classes.tolist()!r}")
        self.classes_ = classes
        scores = np.asarray(self._score(X, codes.astype(np.intp), classes.size),
                            dtype=np.float64)
        self.scores_ = scores
        self.ranking_ = np.argsort(-scores, kind="stable")
        return self

    def _check_input(self, X, y):
        if _validate_data is not None:
            X, y = _validate_data(self, X, y, dtype=np.float64,
                                  ensure_all_finite=False)
        else:  # pragma: no cover - older scikit-learn
            X, y = self._validate_data(X, y, dtype=np.float64, force_all_finite=False)
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"{type(self).__name__} needs finite input: X holds {int(bad.sum())} "
                f"NaN/inf value(s), the first at row {r}, column {c}")
        check_classification_targets(y)
        return X, y

    def _get_support_mask(self):
        check_is_fitted(self, "ranking_")
        mask = np.zeros(self.ranking_.size, dtype=bool)
        mask[self.ranking_[:min(self.n_features_to_select, self.ranking_.size)]] = True
        return mask

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def _n_threads(n_jobs) -> int:
    """scikit-learn's convention: None -> 1, -1 -> all CPUs, -2 -> all but one."""
    if n_jobs is None:
        return 1
    if not isinstance(n_jobs, Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be None or a non-zero integer, got {n_jobs!r}")
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + int(n_jobs))
    return int(n_jobs)


def _positive_or_none(value, name):
    if value is not None and (not isinstance(value, Integral) or value < 1):
        raise ValueError(f"{name} must be None or a positive integer, got {value!r}")


# ----------------------------------------------------------------------------
# ReliefF
# ----------------------------------------------------------------------------
class ReliefF(_RankingSelector):
    """ReliefF feature ranking with Weka 3.6 ``ReliefFAttributeEval`` semantics.

    Parameters
    ----------
    n_features_to_select : int, default 15
        Number of top-ranked features kept by ``transform``.
    n_neighbors : int, default 10
        Nearest hits and nearest misses (per other class) of each instance.
    chunk_size : int or None
        Rows per block of distances (and at most 512 rows per accumulation
        tile). None: the whole symmetric distance matrix when it fits in
        ~256 MB (half the work), else blocks of rows of ~85 MB.
    column_chunk_size : int or None
        Columns per accumulation tile; None: tiles of ~2 MB.
    n_jobs : int or None
        Threads for the distance computation (None: 1, -1: all CPUs).

    Attributes
    ----------
    scores_, ranking_, classes_, n_features_in_ (and feature_names_in_).
    """

    def __init__(self, n_features_to_select=15, n_neighbors=10, chunk_size=None,
                 column_chunk_size=None, n_jobs=None):
        self.n_features_to_select = n_features_to_select
        self.n_neighbors = n_neighbors
        self.chunk_size = chunk_size
        self.column_chunk_size = column_chunk_size
        self.n_jobs = n_jobs

    def _score(self, X, codes, n_classes):
        k = self.n_neighbors
        if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ReliefF: n_neighbors must be a positive integer, got {k!r}")
        _positive_or_none(self.chunk_size, "chunk_size")
        _positive_or_none(self.column_chunk_size, "column_chunk_size")
        return relieff_scores(X, codes, int(k), chunk_size=self.chunk_size,
                              column_chunk_size=self.column_chunk_size,
                              n_jobs=_n_threads(self.n_jobs))


def _weka_normalise(X):
    """Weka's ``norm``: min-max scaling per column, 0 for a column of range < 1e-6."""
    lo = X.min(axis=0)
    span = X.max(axis=0) - lo
    flat = span < WEKA_EPS
    Xn = X - lo
    Xn /= np.where(flat, 1.0, span)
    if flat.any():
        Xn[:, flat] = 0.0
    return Xn


def _l1(A, B, n_threads):
    """Exact cityblock distances between the rows of A and B (threads split A)."""
    if n_threads == 1 or A.shape[0] < 2 * n_threads:
        return cdist(A, B, "cityblock")
    out = np.empty((A.shape[0], B.shape[0]))
    bounds = np.linspace(0, A.shape[0], n_threads + 1).astype(int)

    def work(t):
        out[bounds[t]:bounds[t + 1]] = cdist(A[bounds[t]:bounds[t + 1]], B, "cityblock")

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(work, range(n_threads)))
    return out


def _weka_scan(dist, k):
    """Replay Weka's ``findKHitMiss`` bookkeeping on candidate distances in index order.

    The first ``k`` candidates fill the slots; a later one replaces the worst
    slot (the first holding the maximum) only when strictly closer. Returns the
    candidate positions kept, in slot order.
    """
    values = dist.tolist()
    slot_d = values[:k]
    slot_i = list(range(len(slot_d)))
    if len(slot_d) == k and len(values) > k:
        worst = slot_d.index(max(slot_d))
        # the worst slot only improves: later candidates not closer than the
        # worst after the fill can never enter
        for i in (np.flatnonzero(dist[k:] < slot_d[worst]) + k).tolist():
            if values[i] < slot_d[worst]:
                slot_d[worst] = values[i]
                slot_i[worst] = i
                worst = slot_d.index(max(slot_d))
    return np.asarray(slot_i, dtype=np.intp)


def _neighbours(Xn, codes, n_classes, k, chunk, n_threads, use_full):
    """Nearest hits/misses of every row and the weight of each class group.

    Returns ``(nb, wc)``: ``nb[i, c*k:(c+1)*k]`` are the neighbours of row ``i``
    in class ``c`` (row ``i`` itself fills unused slots, adding a zero
    difference), ``wc[i, c]`` the weight of their summed differences:
    ``-1/k_hit`` for the own class, ``w_c/k_c`` for another class, 0 when the
    class offers no neighbour.
    """
    n = Xn.shape[0]
    counts = np.bincount(codes, minlength=n_classes)
    prior = counts / n
    members = [np.flatnonzero(codes == c) for c in range(n_classes)]
    nb = np.repeat(np.arange(n, dtype=np.intp)[:, None], n_classes * k, axis=1)
    wc = np.zeros((n, n_classes))

    # Distances: the whole symmetric matrix when it fits the budget (half the work),
    # else blocks of rows. Both give bit-identical distances.
    full = None
    if use_full:
        full = np.empty((n, n))
        tile = 512
        pairs = [(a, b) for a in range(0, n, tile) for b in range(a, n, tile)]

        def work(ab):
            a, b = ab
            block = cdist(Xn[a:a + tile], Xn[b:b + tile], "cityblock")
            full[a:a + tile, b:b + tile] = block
            full[b:b + tile, a:a + tile] = block.T

        if n_threads == 1:
            for ab in pairs:
                work(ab)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(work, pairs))

    for r0 in range(0, n, chunk):
        rows = np.arange(r0, min(n, r0 + chunk))
        D = full[r0:r0 + rows.size] if full is not None else _l1(Xn[rows], Xn, n_threads)
        D[np.arange(rows.size), rows] = np.inf  # an instance is not its own neighbour
        own = codes[rows]
        for c in range(n_classes):
            cand = members[c]
            valid = cand.size - (own == c)  # candidates per row, self excluded
            stored = np.minimum(k, valid)
            Dc = D[:, cand]
            if cand.size > k:
                # the k + 1 smallest (unordered), then ordered by (distance, index)
                part = np.argpartition(Dc, k, axis=1)[:, :k + 1]
            else:
                part = np.broadcast_to(np.arange(cand.size), (rows.size, cand.size))
            vals = np.take_along_axis(Dc, part, axis=1)
            order = np.lexsort((part, vals), axis=1)
            part = np.take_along_axis(part, order, axis=1)
            vals = np.take_along_axis(vals, order, axis=1)
            chosen = part[:, :min(k, cand.size)].copy()
            # a tie at the k-th distance: Weka's scan decides which instances stay
            if cand.size > k:
                for t in np.flatnonzero((valid > k) & (vals[:, k] == vals[:, k - 1])):
                    keep = np.flatnonzero(cand != rows[t])
                    chosen[t] = keep[_weka_scan(Dc[t, keep], k)]
            used = np.arange(chosen.shape[1])[None, :] < stored[:, None]
            nb[rows, c * k:c * k + chosen.shape[1]] = np.where(used, cand[chosen],
                                                               rows[:, None])
            if n_classes > 2:
                factor = prior[c] / (1.0 - prior[own])
            else:
                factor = np.ones(rows.size)
            weight = np.where(own == c, -1.0, factor) / np.maximum(stored, 1)
            wc[rows, c] = np.where(stored > 0, weight, 0.0)
    return nb, wc


def relieff_scores(X, codes, k=10, *, chunk_size=None, column_chunk_size=None,
                   n_jobs=1):
    """ReliefF scores of the columns of ``X`` (float64, finite) for class codes 0..C-1.

    See the module docstring for the exact semantics.
    """
    X = np.asarray(X, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.intp)
    n, p = X.shape
    n_classes = int(codes.max()) + 1
    # a block of distance rows is copied about three times while neighbours are picked
    chunk = min(n, chunk_size or max(1, BLOCK_BYTES // (8 * 3 * n)))
    use_full = chunk_size is None and n * n * 8 <= BLOCK_BYTES
    Xn = _weka_normalise(X)
    nb, wc = _neighbours(Xn, codes, n_classes, k, chunk, n_jobs, use_full)

    # Accumulate sum_i sum_c wc[i, c] * sum_{j in class c} |Xn[i] - Xn[nb_ij]| over
    # cache-sized tiles of rows x columns. Within a row the terms are added slot by
    # slot, rows are added in index order (cumsum), so the result does not depend
    # on the tile sizes.
    rows_per = min(chunk, 512)
    cols = column_chunk_size or max(1, 2**18 // rows_per)
    total = np.zeros(p)
    for c0 in range(0, p, cols):
        cs = slice(c0, min(p, c0 + cols))
        acc = total[cs].copy()
        for r0 in range(0, n, rows_per):
            rs = slice(r0, min(n, r0 + rows_per))
            base = Xn[rs, cs]
            contrib = np.zeros((base.shape[0] + 1, base.shape[1]))
            part = contrib[1:]
            group = np.empty_like(base)
            for c in range(n_classes):
                wcol = wc[rs, c]
                if not wcol.any():
                    continue
                group.fill(0.0)
                for j in range(c * k, (c + 1) * k):
                    diff = Xn[nb[rs, j], cs]
                    np.subtract(base, diff, out=diff)
                    np.abs(diff, out=diff)
                    group += diff
                group *= wcol[:, None]
                part += group
            contrib[0] = acc
            acc = np.cumsum(contrib, axis=0)[-1]
        total[cs] = acc
    return total * (1.0 / n)


# ----------------------------------------------------------------------------
# Symmetric uncertainty with Fayyad-Irani MDL discretisation
# ----------------------------------------------------------------------------
class SymmetricUncertainty(_RankingSelector):
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
        _positive_or_none(self.column_chunk_size, "column_chunk_size")
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
    X = np.asarray(X, dtype=np.float64)
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
        Xt = np.ascontiguousarray(X[:, b0:b0 + block].T)
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


# ----------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------
SELECTORS = {"relieff": ReliefF, "su": SymmetricUncertainty}


def make_selector(name: str, k: int, **params):
    """The selector registered as ``name`` keeping ``k`` features, with ``params``."""
    try:
        cls = SELECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown selector {name!r}; known selectors: {', '.join(sorted(SELECTORS))}"
        ) from None
    return cls(n_features_to_select=k, **params)


# ----------------------------------------------------------------------------
# The ``select`` stage: per-fold rankings fitted on training subjects only
# ----------------------------------------------------------------------------
RANK_SCHEMA = pa.schema(
    [("protocol", pa.string()), ("fold", pa.int32()), ("selector", pa.string()),
     ("rank", pa.int32()), ("feature", pa.int32()), ("score", pa.float64()),
     ("n_train", pa.int32())]
)


def rank_folds(table: pa.Table, split: pd.DataFrame, selector: str, params: dict,
               max_k: int) -> pa.Table:
    """Top-``max_k`` features of each fold, the selector fitted on training rows only."""
    X = feature_matrix(table)
    subjects = np.asarray(table.column("subject_id").to_pylist(), dtype=object)
    y = np.asarray(table.column("y").to_pylist(), dtype=np.int8)
    rows = []
    protocol = split["protocol"].iloc[0]
    for fold in sorted(split["fold"].unique()):
        train_s, _ = fold_subjects(split, fold)
        tr = np.isin(subjects, list(train_s))
        if tr.sum() < 2 or len(np.unique(y[tr])) < 2:
            log.warning("protocol %s fold %s: training rows hold %d row(s) and %d class(es); "
                        "selector not fitted, fold skipped", protocol, fold, tr.sum(),
                        len(np.unique(y[tr])))
            continue
        sel = make_selector(selector, max_k, **params).fit(X[tr], y[tr])
        top = sel.ranking_[:max_k]
        for r, f in enumerate(top):
            rows.append((protocol, int(fold), selector, r, int(f), float(sel.scores_[f]),
                         int(tr.sum())))
    df = pd.DataFrame(rows, columns=RANK_SCHEMA.names)
    return pa.Table.from_pandas(df, RANK_SCHEMA, preserve_index=False)
