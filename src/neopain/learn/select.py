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

Distances are computed exactly: every engine adds a pair's attribute
differences in attribute order, as Weka (and scipy's cityblock ``cdist``)
does, so all engines, row blocks and attribute blocks give bit-identical
distances and hence the same neighbours, ties included. Engines (``backend``):
``numba`` (default on CPU; compiled tiles with the vector lanes over pairs,
never over attributes, so no fast-math reassociation), ``torch`` (one
attribute at a time on the whole block of pairs; CUDA when present, chosen by
``auto``), ``scipy`` (``cdist``; the fallback without numba). The whole
symmetric n x n matrix is built when it fits in ~256 MB (half the work), else
blocks of rows. Attributes are normalised to float64 in blocks of ~64 MB from
the input (float32 input is never copied whole), for the distances and again
for the score accumulation (compiled, per attribute, rows in index order), so
memory is bounded by the input + the distance matrix + one block even for
VGG conv5's 147,968 columns, and the scores do not depend on block sizes or
threads. The cost is dominated by the ``n^2 p / 2`` attribute differences.

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

``Prefiltered`` -- an optional one-way ANOVA F prefilter (``f_classif``) before
either ranker, for very wide layers; not the paper's method (documented there).
mRMR is not implemented.

``SELECTORS`` maps the workflow's selector names to the classes;
``make_selector(name, k, prefilter=None, **params)`` builds one;
``rank_folds_array`` ranks per fold on the training subjects only.
"""

from __future__ import annotations

import logging
import os
import sys
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

from neopain.learn.split import iter_folds
from neopain.features.tables import feature_matrix

log = logging.getLogger(__name__)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

__all__ = ["ReliefF", "SymmetricUncertainty", "Prefiltered", "SELECTORS", "make_selector",
           "rank_folds", "rank_folds_array"]

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
        with _torch_threads_kept():
            scores = np.asarray(self._score(X, codes.astype(np.intp), classes.size),
                                dtype=np.float64)
        self.scores_ = scores
        self.ranking_ = np.argsort(-scores, kind="stable")
        return self

    def _check_input(self, X, y):
        if _validate_data is not None:
            X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32],
                                  ensure_all_finite=False)
        else:  # pragma: no cover - older scikit-learn
            X, y = self._validate_data(X, y, dtype=[np.float64, np.float32],
                                       force_all_finite=False)
        # checked in column blocks: no X-sized temporary for very wide inputs
        step = max(1, 2**24 // max(1, X.shape[0]))
        n_bad, first = 0, None
        for c0 in range(0, X.shape[1], step):
            bad = ~np.isfinite(X[:, c0:c0 + step])
            if bad.any():
                n_bad += int(bad.sum())
                r, c = np.argwhere(bad)[0]
                first = min(first or (r, c + c0), (int(r), int(c) + c0))
        if n_bad:
            r, c = first
            raise ValueError(
                f"{type(self).__name__} needs finite input: X holds {n_bad} "
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


class _torch_threads_kept:
    """Restore torch's CPU thread count after scoring.  numba's OpenMP threading layer
    resets the OpenMP thread count that torch's CPU kernels share (libgomp): a torch set
    to 1 thread ran on 2 after a ReliefF fit in the same process, oversubscribing a job's
    cores (tests/test_select.py)."""

    def __enter__(self):
        torch = sys.modules.get("torch")
        self.old = torch.get_num_threads() if torch is not None else None

    def __exit__(self, *exc):
        torch = sys.modules.get("torch")
        if torch is not None and self.old is not None and torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)


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
        Rows per block of distances. None: the whole symmetric distance matrix
        when it fits in ~256 MB (half the work), else blocks of rows of ~85 MB.
    column_chunk_size : int or None
        Attributes normalised and processed together (distances and score
        accumulation); None: blocks of ~64 MB. Bounds the memory for very wide
        inputs (VGG conv5: 147,968 columns).
    n_jobs : int or None
        CPU threads (None: 1, -1: all CPUs). Threads never change the scores.
    backend : {"auto", "numba", "torch", "scipy"}
        Distance engine; all give bit-identical distances (attribute
        differences added in attribute order, as Weka does). "auto": torch on
        CUDA when a GPU is present, else numba when installed, else scipy.
        "torch" runs on ``device`` ("cuda" when available, else CPU: slow).
    device : str or None
        torch device for ``backend="torch"`` (None: cuda if available).

    Attributes
    ----------
    scores_, ranking_, classes_, n_features_in_ (and feature_names_in_),
    backend_ (the engine used).
    """

    def __init__(self, n_features_to_select=15, n_neighbors=10, chunk_size=None,
                 column_chunk_size=None, n_jobs=None, backend="auto", device=None):
        self.n_features_to_select = n_features_to_select
        self.n_neighbors = n_neighbors
        self.chunk_size = chunk_size
        self.column_chunk_size = column_chunk_size
        self.n_jobs = n_jobs
        self.backend = backend
        self.device = device

    def _score(self, X, codes, n_classes):
        k = self.n_neighbors
        if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ReliefF: n_neighbors must be a positive integer, got {k!r}")
        _positive_or_none(self.chunk_size, "chunk_size")
        _positive_or_none(self.column_chunk_size, "column_chunk_size")
        backend = resolve_backend(self.backend, self.device)
        self.backend_ = backend
        return relieff_scores(X, codes, int(k), chunk_size=self.chunk_size,
                              column_chunk_size=self.column_chunk_size,
                              n_jobs=_n_threads(self.n_jobs), backend=backend,
                              device=self.device)


BACKENDS = ("auto", "numba", "torch", "scipy")


def _have_numba() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:  # pragma: no cover - numba missing or broken
        return False
    return True


def _cuda_available() -> bool:
    # importing torch costs seconds and ~0.5 GB: only where a GPU can exist
    if "torch" not in sys.modules and not os.path.exists("/dev/nvidiactl"):
        return False
    try:
        import torch
    except Exception:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(backend="auto", device=None) -> str:
    """The ReliefF distance engine that ``backend`` means on this machine."""
    if backend not in BACKENDS:
        raise ValueError(f"ReliefF: backend must be one of {', '.join(BACKENDS)}, "
                         f"got {backend!r}")
    if backend == "auto":
        if (device is None or str(device).startswith("cuda")) and _cuda_available():
            return "torch"
        return "numba" if _have_numba() else "scipy"
    if backend == "numba" and not _have_numba():
        raise ValueError("ReliefF: backend='numba' needs the numba package "
                         "(pip install numba); use backend='scipy' or 'auto'")
    return backend


def _weka_norm_params(X, col_block):
    """Per-column minimum and range (float64) and Weka's "flat column" flags."""
    p = X.shape[1]
    lo = np.empty(p)
    span = np.empty(p)
    for c0 in range(0, p, col_block):
        cs = slice(c0, min(p, c0 + col_block))
        lo[cs] = X[:, cs].min(axis=0)
        span[cs] = X[:, cs].max(axis=0).astype(np.float64) - lo[cs]
    return lo, span, span < WEKA_EPS


def _weka_normalise_T(X, cs, lo, span, flat):
    """Weka's ``norm`` of the columns ``cs`` of X, attribute-major (q x n, float64).

    ``(x - min_a) / (max_a - min_a)`` in float64, 0 for a column of range < 1e-6.
    """
    Xt = np.array(X[:, cs].T, dtype=np.float64, order="C")
    Xt -= lo[cs, None]
    Xt /= np.where(flat[cs], 1.0, span[cs])[:, None]
    if flat[cs].any():
        Xt[flat[cs]] = 0.0
    return Xt


def _weka_normalise(X):
    """Weka's ``norm``: min-max scaling per column, 0 for a column of range < 1e-6."""
    lo, span, flat = _weka_norm_params(X, max(1, X.shape[1]))
    return np.ascontiguousarray(_weka_normalise_T(X, slice(None), lo, span, flat).T)


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


class _Distances:
    """Exact Weka/cityblock distances of blocks of rows, from attribute blocks.

    Every engine adds the attribute differences of a pair in attribute order,
    so the distances are bit-identical across engines, row blocks and
    attribute blocks (scipy's cdist works on all attributes at once).
    """

    def __init__(self, X, norm, backend, n_threads, col_block, device):
        self.X, self.norm, self.backend = X, norm, backend
        self.n_threads, self.col_block = n_threads, col_block
        self.n, self.p = X.shape
        self.device = device

    def _blocks(self):
        for c0 in range(0, self.p, self.col_block):
            cs = slice(c0, min(self.p, c0 + self.col_block))
            yield _weka_normalise_T(self.X, cs, *self.norm)

    def full(self):
        """The whole symmetric n x n matrix."""
        n = self.n
        if self.backend == "scipy":
            Xn = np.ascontiguousarray(
                _weka_normalise_T(self.X, slice(None), *self.norm).T)
            full = np.empty((n, n))
            tile = 512
            pairs = [(a, b) for a in range(0, n, tile) for b in range(a, n, tile)]

            def work(ab):
                a, b = ab
                block = cdist(Xn[a:a + tile], Xn[b:b + tile], "cityblock")
                full[a:a + tile, b:b + tile] = block
                full[b:b + tile, a:a + tile] = block.T

            if self.n_threads == 1:
                for ab in pairs:
                    work(ab)
            else:
                with ThreadPoolExecutor(self.n_threads) as pool:
                    list(pool.map(work, pairs))
            return full
        if self.backend == "torch":
            return self._torch(0, n)
        from neopain.learn import _kernels

        D = np.zeros((n, n))
        with _numba_threads(self.n_threads):
            for XT in self._blocks():
                _kernels.l1_accumulate(XT, 0, n, D, True)
            _kernels.mirror_upper(D)
        return D

    def rows(self, r0, r1):
        """Distances of rows ``r0:r1`` to every row ((r1 - r0) x n)."""
        if self.backend == "scipy":
            Xn = self._scipy_Xn()
            return _l1(Xn[r0:r1], Xn, self.n_threads)
        if self.backend == "torch":
            return self._torch(r0, r1)
        from neopain.learn import _kernels

        D = np.zeros((r1 - r0, self.n))
        with _numba_threads(self.n_threads):
            for XT in self._blocks():
                _kernels.l1_accumulate(XT, r0, r1, D, False)
        return D

    def _scipy_Xn(self):
        if getattr(self, "_Xn", None) is None:
            self._Xn = np.ascontiguousarray(
                _weka_normalise_T(self.X, slice(None), *self.norm).T)
        return self._Xn

    def _torch(self, r0, r1):
        import torch

        dev = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        D = torch.zeros((r1 - r0, self.n), dtype=torch.float64, device=dev)
        for XT in self._blocks():
            T = torch.from_numpy(XT).to(dev)
            for a in range(T.shape[0]):  # one attribute at a time: Weka's order
                col = T[a]
                D += (col[r0:r1, None] - col[None, :]).abs_()
            del T
        return D.cpu().numpy()


class _numba_threads:
    """Run numba's parallel loops on ``n`` threads, restoring the setting after."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import numba

        self.old = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.n, numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        import numba

        numba.set_num_threads(self.old)


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


def _neighbours(dist, codes, n_classes, k, chunk, use_full):
    """Nearest hits/misses of every row and the weight of each class group.

    Returns ``(nb, wc)``: ``nb[i, c*k:(c+1)*k]`` are the neighbours of row ``i``
    in class ``c`` (row ``i`` itself fills unused slots, adding a zero
    difference), ``wc[i, c]`` the weight of their summed differences:
    ``-1/k_hit`` for the own class, ``w_c/k_c`` for another class, 0 when the
    class offers no neighbour.
    """
    n = codes.size
    counts = np.bincount(codes, minlength=n_classes)
    prior = counts / n
    members = [np.flatnonzero(codes == c) for c in range(n_classes)]
    nb = np.repeat(np.arange(n, dtype=np.intp)[:, None], n_classes * k, axis=1)
    wc = np.zeros((n, n_classes))

    # Distances: the whole symmetric matrix when it fits the budget (half the work),
    # else blocks of rows. Both give bit-identical distances.
    full = dist.full() if use_full else None

    for r0 in range(0, n, chunk):
        rows = np.arange(r0, min(n, r0 + chunk))
        D = full[r0:r0 + rows.size] if full is not None else dist.rows(r0, r0 + rows.size)
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


def _accumulate_numpy(XT, nb, wc, k, acc, rows_per):
    """numpy twin of ``_kernels.relieff_accumulate`` (same order, same result)."""
    q, n = XT.shape
    n_classes = wc.shape[1]
    acc = acc.copy()
    for r0 in range(0, n, rows_per):
        rs = slice(r0, min(n, r0 + rows_per))
        base = XT[:, rs]
        contrib = np.zeros((base.shape[1] + 1, q))
        part = contrib[1:]
        group = np.empty((base.shape[1], q))
        for c in range(n_classes):
            wcol = wc[rs, c]
            if not wcol.any():
                continue
            group.fill(0.0)
            for j in range(c * k, (c + 1) * k):
                diff = XT[:, nb[rs, j]].T
                np.subtract(base.T, diff, out=diff)
                np.abs(diff, out=diff)
                group += diff
            group *= wcol[:, None]
            part += group
        contrib[0] = acc
        acc = np.cumsum(contrib, axis=0)[-1]
    return acc


def relieff_scores(X, codes, k=10, *, chunk_size=None, column_chunk_size=None,
                   n_jobs=1, backend="auto", device=None):
    """ReliefF scores of the columns of ``X`` (finite floats) for class codes 0..C-1.

    ``X`` may be float32 (never copied whole: attributes are normalised to
    float64 block by block). See the module docstring for the semantics.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    codes = np.asarray(codes, dtype=np.intp)
    backend = resolve_backend(backend, device)
    n, p = X.shape
    n_classes = int(codes.max()) + 1
    # a block of distance rows is copied about three times while neighbours are picked
    chunk = min(n, chunk_size or max(1, BLOCK_BYTES // (8 * 3 * n)))
    use_full = chunk_size is None and n * n * 8 <= BLOCK_BYTES
    col_block = column_chunk_size or max(1, (BLOCK_BYTES // 4) // (8 * n))
    norm = _weka_norm_params(X, col_block)
    dist = _Distances(X, norm, backend, n_jobs, col_block, device)
    nb, wc = _neighbours(dist, codes, n_classes, k, chunk, use_full)

    # Accumulate sum_i sum_c wc[i, c] * sum_{j in class c} |Xn[i] - Xn[nb_ij]| per
    # attribute: rows in index order, classes, slots; the order does not depend on
    # the block sizes, so chunked and unchunked runs give identical scores.
    total = np.zeros(p)
    compiled = backend != "scipy" and _have_numba()
    if compiled:
        from neopain.learn import _kernels
    for c0 in range(0, p, col_block):
        cs = slice(c0, min(p, c0 + col_block))
        XT = _weka_normalise_T(X, cs, *norm)
        if compiled:
            out = np.zeros(XT.shape[0])
            with _numba_threads(n_jobs):
                _kernels.relieff_accumulate(XT, nb, wc, k, out)
            total[cs] = out
        else:
            total[cs] = _accumulate_numpy(XT, nb, wc, k, np.zeros(XT.shape[0]),
                                          max(1, min(512, 2**18 // max(1, XT.shape[0]))))
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


# ----------------------------------------------------------------------------
# cheap prefilter
# ----------------------------------------------------------------------------
class Prefiltered(_RankingSelector):
    """An ANOVA-F prefilter before a (costly) ranker, for very wide layers.

    ``fit`` keeps the ``n_prefilter`` columns of largest one-way ANOVA F
    statistic (``sklearn.feature_selection.f_classif``; ties: lower index), in
    their original order, and ranks them with a clone of ``selector``. Columns
    the prefilter dropped get the score NaN and rank after the kept ones (by
    index). Not part of the paper's method: it changes which features can be
    chosen (ReliefF/SU scores of kept columns are those of the reduced table,
    for ReliefF the distances use the kept columns only). Documented as a
    speed option; the default pipeline does not prefilter.
    """

    def __init__(self, selector=None, n_prefilter=1000, n_features_to_select=15):
        self.selector = selector
        self.n_prefilter = n_prefilter
        self.n_features_to_select = n_features_to_select

    def _score(self, X, codes, n_classes):
        from sklearn.base import clone
        from sklearn.feature_selection import f_classif

        if not isinstance(self.n_prefilter, Integral) or self.n_prefilter < 1:
            raise ValueError(f"n_prefilter must be a positive integer, got "
                             f"{self.n_prefilter!r}")
        inner = clone(self.selector if self.selector is not None else ReliefF())
        p = X.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            F = np.nan_to_num(f_classif(X, codes)[0], nan=0.0, posinf=np.finfo(float).max)
        keep = np.sort(np.argsort(-F, kind="stable")[:min(self.n_prefilter, p)])
        inner.set_params(n_features_to_select=min(self.n_features_to_select, keep.size))
        inner.fit(X[:, keep], codes)
        self.selector_ = inner
        self.prefilter_support_ = keep
        self.f_scores_ = F
        scores = np.full(p, np.nan)
        scores[keep] = inner.scores_
        return scores


# ----------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------
SELECTORS = {"relieff": ReliefF, "su": SymmetricUncertainty}
PREFILTERS = ("none", "anova")


def make_selector(name: str, k: int, prefilter: dict | None = None, **params):
    """The selector registered as ``name`` keeping ``k`` features, with ``params``.

    ``prefilter={"method": "anova", "n_features": N}`` wraps it in
    :class:`Prefiltered` (``{"method": "none"}`` or None: no prefilter).
    """
    try:
        cls = SELECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown selector {name!r}; known selectors: {', '.join(sorted(SELECTORS))}"
        ) from None
    sel = cls(n_features_to_select=k, **params)
    method = (prefilter or {}).get("method", "none")
    if method not in PREFILTERS:
        raise ValueError(f"unknown prefilter {method!r}; known: {', '.join(PREFILTERS)}")
    if method == "anova":
        return Prefiltered(sel, int(prefilter.get("n_features", 1000)), k)
    return sel


# ----------------------------------------------------------------------------
# The ``select`` stage: per-fold rankings fitted on training subjects only
# ----------------------------------------------------------------------------
RANK_SCHEMA = pa.schema(
    [("protocol", pa.string()), ("fold", pa.int32()), ("selector", pa.string()),
     ("rank", pa.int32()), ("feature", pa.int32()), ("score", pa.float64()),
     ("n_train", pa.int32())]
)


def rank_folds_array(X: np.ndarray, subjects: np.ndarray, y: np.ndarray,
                     split: pd.DataFrame, selector: str, params: dict, max_k: int,
                     prefilter: dict | None = None, pose: np.ndarray | None = None
                     ) -> pa.Table:
    """Top-``max_k`` features of each fold, the selector fitted on training rows only.

    Test rows are never passed to the selector (its scaling ranges, neighbours
    and discretisation come from training subjects alone). ``pose`` (rows x angles or
    pose statistics): regressed out of ``X`` first, fitted on the fold's training rows
    (:func:`neopain.learn.posecontrol.residualize`).
    """
    subjects = np.asarray(subjects, dtype=object)
    y = np.asarray(y)
    rows = []
    protocol = split["protocol"].iloc[0]
    for fold, tr, _ in iter_folds(split, subjects):
        if tr.sum() < 2 or len(np.unique(y[tr])) < 2:
            log.warning("protocol %s fold %s: training rows hold %d row(s) and %d class(es); "
                        "selector not fitted, fold skipped", protocol, fold, tr.sum(),
                        len(np.unique(y[tr])))
            continue
        Xf = X
        if pose is not None:
            from neopain.learn.posecontrol import residualize

            Xf = residualize(X, pose, tr).astype(X.dtype)
        sel = make_selector(selector, max_k, prefilter=prefilter, **params).fit(Xf[tr], y[tr])
        top = sel.ranking_[:max_k]
        for r, f in enumerate(top):
            rows.append((protocol, int(fold), selector, r, int(f), float(sel.scores_[f]),
                         int(tr.sum())))
    df = pd.DataFrame(rows, columns=RANK_SCHEMA.names)
    return pa.Table.from_pandas(df, RANK_SCHEMA, preserve_index=False)


def rank_folds(table: pa.Table, split: pd.DataFrame, selector: str, params: dict,
               max_k: int, prefilter: dict | None = None, baseline: str = "none",
               pose_regression: bool = False) -> pa.Table:
    """:func:`rank_folds_array` on a gathered feature table (subject ``baseline`` removed
    first, :mod:`neopain.learn.baseline`; ``pose_regression``: the table's ``pose`` column
    regressed out per fold)."""
    from neopain.learn.posecontrol import table_pose

    X = feature_matrix(table, baseline)
    subjects = np.asarray(table.column("subject_id").to_pylist(), dtype=object)
    y = np.asarray(table.column("y").to_pylist(), dtype=np.int8)
    pose = table_pose(table, baseline) if pose_regression else None
    return rank_folds_array(X, subjects, y, split, selector, params, max_k, prefilter, pose)
