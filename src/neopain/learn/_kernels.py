"""Compiled (numba) kernels for ReliefF, kept exact: no reassociation of sums.

``l1_accumulate`` adds the attribute differences of one block of attributes to
a distance accumulator in attribute order, exactly as Weka's
``ReliefFAttributeEval.distance`` (and scipy's ``cdist(..., "cityblock")``)
adds them: ``D[i, j] = (((D0 + d_0) + d_1) + ...)`` one attribute after the
other, so splitting the attributes into consecutive blocks and carrying ``D``
gives bit-identical distances. The vector lanes run over *pairs* (columns
``j``), never over attributes, so the compiler needs no fast-math licence.

``weka_neighbours`` runs Weka's ``findKHitMiss`` scan (candidates in index order, the
worst slot replaced only by a strictly closer one) for every row and class of a block
of distance rows.

``relieff_accumulate`` sums the weighted neighbour differences per attribute
in a fixed order (rows in index order, classes, then slots), so the scores
do not depend on how attributes are blocked or how many threads run.

Imported lazily by :mod:`neopain.learn.relieff` and
:mod:`neopain.learn.relieff_distances`; numba compiles on first use and caches the
machine code beside this file (``__pycache__``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

ROW_TILE = 8      # rows of a distance tile (accumulator 8 x 256 doubles = 16 KiB)
COL_TILE = 256
ATTR_CHUNK = 128  # attributes per pass over a column stripe (256 x 128 doubles in L2)


def balanced_order(n_stripes):
    """Column stripes in the order 0, n-1, 1, n-2, ...: with the symmetric matrix a stripe's
    work grows with its index, and numba splits a ``prange`` into contiguous runs, so
    pairing the light with the heavy ones gives every thread about the same work."""
    order = np.empty(n_stripes, np.int64)
    lo, hi, t = 0, n_stripes - 1, 0
    while lo <= hi:
        order[t] = lo
        t += 1
        if hi != lo:
            order[t] = hi
            t += 1
        lo += 1
        hi -= 1
    return order


@njit(parallel=True, cache=True, nogil=True)
def l1_accumulate(XT, r0, r1, D, symmetric, order):  # pragma: no cover - compiled
    """``D[i - r0, j] += sum_a |XT[a, i] - XT[a, j]|`` for rows ``r0 <= i < r1``.

    ``XT``: (q, n) attribute-major block (C-contiguous float64), ``D``:
    (r1 - r0, n), ``order``: :func:`balanced_order` of the column stripes. With
    ``symmetric`` (only when ``r0 == 0`` and ``r1 == n``) tiles strictly below the
    diagonal are skipped; the caller mirrors them. Each thread takes stripes of
    ``COL_TILE`` columns and, ``ATTR_CHUNK`` attributes at a time (the stripe's
    slice of ``XT`` stays in cache), runs down its row tiles; every pair still
    adds its differences in attribute order.
    """
    q, n = XT.shape
    m = r1 - r0
    nrb = (m + ROW_TILE - 1) // ROW_TILE
    ncb = (n + COL_TILE - 1) // COL_TILE
    for t in prange(ncb):
        bj = order[t]
        j0 = bj * COL_TILE
        je = min(j0 + COL_TILE, n)
        nj = je - j0
        rows_t = nrb
        if symmetric:
            rows_t = min(nrb, (je - r0 + ROW_TILE - 1) // ROW_TILE)
        acc = np.zeros((ROW_TILE, COL_TILE))
        for a0 in range(0, q, ATTR_CHUNK):
            a1 = min(q, a0 + ATTR_CHUNK)
            for bi in range(rows_t):
                i0 = bi * ROW_TILE
                ni = min(i0 + ROW_TILE, m) - i0
                for ii in range(ni):
                    acc[ii, :nj] = D[i0 + ii, j0:je]
                for a in range(a0, a1):
                    # slices: the loops below index from 0, no negative-index wraparound
                    # checks, so LLVM vectorises the pair loop; four rows share each load
                    # of the column values (1.3x over one row at a time; one assignment
                    # per name: a tuple assignment here made the loop 1.7x slower)
                    seg = XT[a, j0:je]
                    xs = XT[a, r0 + i0:r0 + i0 + ni]
                    ii = 0
                    while ii + 3 < ni:
                        x0 = xs[ii]
                        x1 = xs[ii + 1]
                        x2 = xs[ii + 2]
                        x3 = xs[ii + 3]
                        ar0 = acc[ii]
                        ar1 = acc[ii + 1]
                        ar2 = acc[ii + 2]
                        ar3 = acc[ii + 3]
                        for jj in range(nj):
                            s = seg[jj]
                            ar0[jj] += abs(x0 - s)
                            ar1[jj] += abs(x1 - s)
                            ar2[jj] += abs(x2 - s)
                            ar3[jj] += abs(x3 - s)
                        ii += 4
                    while ii < ni:
                        x = xs[ii]
                        ar = acc[ii]
                        for jj in range(nj):
                            ar[jj] += abs(x - seg[jj])
                        ii += 1
                for ii in range(ni):
                    D[i0 + ii, j0:je] = acc[ii, :nj]


@njit(parallel=True, cache=True, nogil=True)
def mirror_upper(D):  # pragma: no cover - compiled
    """Copy the upper triangle of the square ``D`` onto its lower triangle."""
    n = D.shape[0]
    for i in prange(n):
        for j in range(i):
            D[i, j] = D[j, i]


@njit(parallel=True, cache=True, nogil=True)
def relieff_accumulate(XT, nb, wc, k, out):  # pragma: no cover - compiled
    """``out[a] += sum_i sum_c wc[i, c] * sum_{s in class c} |XT[a, i] - XT[a, nb[i, s]]|``.

    Rows in index order; within a row the classes in order, within a class the
    slots in order; ``wc[i, c] == 0`` contributes nothing (skipped).
    """
    q, n = XT.shape
    n_classes = wc.shape[1]
    for a in prange(q):
        row = XT[a]
        total = out[a]
        for i in range(n):
            x = row[i]
            contrib = 0.0
            for c in range(n_classes):
                w = wc[i, c]
                if w == 0.0:
                    continue
                g = 0.0
                for s in range(c * k, (c + 1) * k):
                    g += abs(x - row[nb[i, s]])
                contrib += g * w
            total += contrib
        out[a] = total


@njit(parallel=True, cache=True, nogil=True)
def weka_neighbours(D, r0, codes, members, starts, k, nb):  # pragma: no cover - compiled
    """Weka's ``findKHitMiss`` for rows ``r0 .. r0 + len(D)``, every class, in one pass.

    ``D``: distances of those rows to every instance; ``members[starts[c]:starts[c+1]]``:
    the instances of class ``c`` in index order. Candidates are scanned in index order
    (the row itself skipped): the first ``k`` fill the slots, a later one replaces the
    worst slot (the first holding the maximum) only when strictly closer. Without a
    tie at the k-th distance (or with at most ``k`` candidates) the kept neighbours
    are written ordered by (distance, index); with such a tie in Weka's slot order.
    ``nb[i, c*k:(c+1)*k]`` receives them; unused slots keep their value (the row).
    """
    m = D.shape[0]
    n_classes = starts.size - 1
    for t in prange(m):
        i = r0 + t
        row = D[t]
        sd = np.empty(k)
        si = np.empty(k, np.int64)
        for c in range(n_classes):
            filled = 0
            worst = 0
            for p in range(starts[c], starts[c + 1]):
                j = members[p]
                if j == i:
                    continue
                d = row[j]
                if filled < k:
                    sd[filled] = d
                    si[filled] = j
                    filled += 1
                    if filled == k:
                        worst = 0
                        for s in range(1, k):
                            if sd[s] > sd[worst]:
                                worst = s
                elif d < sd[worst]:
                    sd[worst] = d
                    si[worst] = j
                    worst = 0
                    for s in range(1, k):
                        if sd[s] > sd[worst]:
                            worst = s
            tie = False
            if filled == k:
                kth = sd[worst]
                chosen_at_kth = 0
                for s in range(k):
                    if sd[s] == kth:
                        chosen_at_kth += 1
                at_kth = 0
                for p in range(starts[c], starts[c + 1]):
                    j = members[p]
                    if j != i and row[j] == kth:
                        at_kth += 1
                tie = at_kth > chosen_at_kth
            if not tie:  # insertion sort by (distance, index)
                for s in range(1, filled):
                    d = sd[s]
                    j = si[s]
                    u = s - 1
                    while u >= 0 and (sd[u] > d or (sd[u] == d and si[u] > j)):
                        sd[u + 1] = sd[u]
                        si[u + 1] = si[u]
                        u -= 1
                    sd[u + 1] = d
                    si[u + 1] = j
            for s in range(filled):
                nb[i, c * k + s] = si[s]
