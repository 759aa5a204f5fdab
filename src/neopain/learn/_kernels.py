"""Compiled (numba) kernels for ReliefF, kept exact: no reassociation of sums.

``l1_accumulate`` adds the attribute differences of one block of attributes to
a distance accumulator in attribute order, exactly as Weka's
``ReliefFAttributeEval.distance`` (and scipy's ``cdist(..., "cityblock")``)
adds them: ``D[i, j] = (((D0 + d_0) + d_1) + ...)`` one attribute after the
other, so splitting the attributes into consecutive blocks and carrying ``D``
gives bit-identical distances. The vector lanes run over *pairs* (columns
``j``), never over attributes, so the compiler needs no fast-math licence.

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


@njit(parallel=True, cache=True, nogil=True)
def l1_accumulate(XT, r0, r1, D, symmetric):  # pragma: no cover - compiled
    """``D[i - r0, j] += sum_a |XT[a, i] - XT[a, j]|`` for rows ``r0 <= i < r1``.

    ``XT``: (q, n) attribute-major block (C-contiguous float64), ``D``:
    (r1 - r0, n). With ``symmetric`` (only when ``r0 == 0`` and ``r1 == n``)
    tiles strictly below the diagonal are skipped; the caller mirrors them.
    """
    q, n = XT.shape
    m = r1 - r0
    nrb = (m + ROW_TILE - 1) // ROW_TILE
    ncb = (n + COL_TILE - 1) // COL_TILE
    for t in prange(nrb * ncb):
        bi = t // ncb
        bj = t - bi * ncb
        i0 = bi * ROW_TILE
        j0 = bj * COL_TILE
        ie = min(i0 + ROW_TILE, m)
        je = min(j0 + COL_TILE, n)
        if symmetric and je <= i0 + r0:
            continue
        ni = ie - i0
        nj = je - j0
        acc = np.zeros((ROW_TILE, COL_TILE))
        for ii in range(ni):
            acc[ii, :nj] = D[i0 + ii, j0:je]
        for a in range(q):
            # slices: the loops below index from 0, no negative-index wraparound
            # checks, so LLVM vectorises the pair loop
            seg = XT[a, j0:je]
            xs = XT[a, r0 + i0:r0 + i0 + ni]
            for ii in range(ni):
                x = xs[ii]
                ar = acc[ii]
                for jj in range(nj):
                    ar[jj] += abs(x - seg[jj])
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
