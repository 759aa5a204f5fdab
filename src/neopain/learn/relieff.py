"""ReliefF feature ranking with Weka 3.6 ``ReliefFAttributeEval`` semantics.

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
The distances are computed by :mod:`neopain.learn.relieff_distances`.
"""

from __future__ import annotations

import os
import sys
from numbers import Integral

import numpy as np

from neopain.learn.ranking import (BLOCK_BYTES, RankingSelector, n_threads_of,
                                   positive_or_none)
from neopain.learn.relieff_distances import (Distances, numba_threads, weka_norm_params,
                                             weka_normalise_T)


class ReliefF(RankingSelector):
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
        positive_or_none(self.chunk_size, "chunk_size")
        positive_or_none(self.column_chunk_size, "column_chunk_size")
        backend = resolve_backend(self.backend, self.device)
        self.backend_ = backend
        return relieff_scores(X, codes, int(k), chunk_size=self.chunk_size,
                              column_chunk_size=self.column_chunk_size,
                              n_jobs=n_threads_of(self.n_jobs), backend=backend,
                              device=self.device)


BACKENDS = ("auto", "numba", "torch", "scipy")


def have_numba() -> bool:
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
        return "numba" if have_numba() else "scipy"
    if backend == "numba" and not have_numba():
        raise ValueError("ReliefF: backend='numba' needs the numba package "
                         "(pip install numba); use backend='scipy' or 'auto'")
    return backend




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


def _class_weights(codes, n_classes, k):
    """``wc[i, c]``, the weight of row ``i``'s summed differences to its class-``c``
    neighbours: ``-1/k_hit`` for the own class, ``w_c/k_c`` for another class, 0 when
    the class offers no neighbour."""
    n = codes.size
    counts = np.bincount(codes, minlength=n_classes)
    prior = counts / n
    wc = np.zeros((n, n_classes))
    for c in range(n_classes):
        own = codes == c
        stored = np.minimum(k, counts[c] - own)  # candidates per row, self excluded
        if n_classes > 2:
            factor = prior[c] / (1.0 - prior[codes])
        else:
            factor = np.ones(n)
        weight = np.where(own, -1.0, factor) / np.maximum(stored, 1)
        wc[:, c] = np.where(stored > 0, weight, 0.0)
    return wc


def _neighbours(dist, codes, n_classes, k, chunk, use_full, compiled):
    """Nearest hits/misses of every row and the weight of each class group.

    Returns ``(nb, wc)``: ``nb[i, c*k:(c+1)*k]`` are the neighbours of row ``i``
    in class ``c`` (row ``i`` itself fills unused slots, adding a zero
    difference), ``wc`` as :func:`_class_weights`. ``compiled``: Weka's scan in
    :func:`neopain.learn._kernels.weka_neighbours`, else the numpy twin below (the
    same neighbours in the same order).
    """
    n = codes.size
    members = [np.flatnonzero(codes == c) for c in range(n_classes)]
    nb = np.repeat(np.arange(n, dtype=np.intp)[:, None], n_classes * k, axis=1)
    wc = _class_weights(codes, n_classes, k)

    # Distances: the whole symmetric matrix when it fits the budget (half the work),
    # else blocks of rows. Both give bit-identical distances.
    full = dist.full() if use_full else None
    if compiled:
        from neopain.learn import _kernels
        flat = np.concatenate(members).astype(np.int64)
        starts = np.cumsum([0] + [m.size for m in members]).astype(np.int64)
        codes64 = codes.astype(np.int64)
    for r0 in range(0, n, chunk):
        rows = np.arange(r0, min(n, r0 + chunk))
        D = full[r0:r0 + rows.size] if full is not None else dist.rows(r0, r0 + rows.size)
        if compiled:
            with numba_threads(dist.n_threads):
                _kernels.weka_neighbours(D, r0, codes64, flat, starts, k, nb)
            continue
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
    norm = weka_norm_params(X, col_block)
    dist = Distances(X, norm, backend, n_jobs, col_block, device)
    compiled = backend != "scipy" and have_numba()
    nb, wc = _neighbours(dist, codes, n_classes, k, chunk, use_full, compiled)

    # Accumulate sum_i sum_c wc[i, c] * sum_{j in class c} |Xn[i] - Xn[nb_ij]| per
    # attribute: rows in index order, classes, slots; the order does not depend on
    # the block sizes, so chunked and unchunked runs give identical scores.
    total = np.zeros(p)
    if compiled:
        from neopain.learn import _kernels
    for c0 in range(0, p, col_block):
        cs = slice(c0, min(p, c0 + col_block))
        XT = weka_normalise_T(X, cs, *norm)
        if compiled:
            out = np.zeros(XT.shape[0])
            with numba_threads(n_jobs):
                _kernels.relieff_accumulate(XT, nb, wc, k, out)
            total[cs] = out
        else:
            total[cs] = _accumulate_numpy(XT, nb, wc, k, np.zeros(XT.shape[0]),
                                          max(1, min(512, 2**18 // max(1, XT.shape[0]))))
    return total * (1.0 / n)
