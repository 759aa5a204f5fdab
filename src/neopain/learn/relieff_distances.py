"""Exact Weka/cityblock distances of ReliefF (:mod:`neopain.learn.relieff`).

Attributes are normalised as Weka's ``norm`` does (min-max per column, the range from
the training data, 0 for a column of range below 1e-6), in float64 blocks of columns;
every engine (numba, torch, scipy) adds a pair's attribute differences in attribute
order, so all engines, row blocks and attribute blocks give bit-identical distances.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial.distance import cdist

from neopain.learn.ranking import WEKA_EPS


def weka_norm_params(X, col_block):
    """Per-column minimum and range (float64) and Weka's "flat column" flags."""
    p = X.shape[1]
    lo = np.empty(p)
    span = np.empty(p)
    for c0 in range(0, p, col_block):
        cs = slice(c0, min(p, c0 + col_block))
        lo[cs] = X[:, cs].min(axis=0)
        span[cs] = X[:, cs].max(axis=0).astype(np.float64) - lo[cs]
    return lo, span, span < WEKA_EPS


def weka_normalise_T(X, cs, lo, span, flat):
    """Weka's ``norm`` of the columns ``cs`` of X, attribute-major (q x n, float64).

    ``(x - min_a) / (max_a - min_a)`` in float64, 0 for a column of range < 1e-6.
    """
    Xt = np.array(X[:, cs].T, dtype=np.float64, order="C")
    Xt -= lo[cs, None]
    Xt /= np.where(flat[cs], 1.0, span[cs])[:, None]
    if flat[cs].any():
        Xt[flat[cs]] = 0.0
    return Xt


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


class Distances:
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
            yield weka_normalise_T(self.X, cs, *self.norm)

    def full(self):
        """The whole symmetric n x n matrix."""
        n = self.n
        if self.backend == "scipy":
            Xn = np.ascontiguousarray(
                weka_normalise_T(self.X, slice(None), *self.norm).T)
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
        order = _kernels.balanced_order(-(-n // _kernels.COL_TILE))
        with numba_threads(self.n_threads):
            for XT in self._blocks():
                _kernels.l1_accumulate(XT, 0, n, D, True, order)
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
        order = _kernels.balanced_order(-(-self.n // _kernels.COL_TILE))
        with numba_threads(self.n_threads):
            for XT in self._blocks():
                _kernels.l1_accumulate(XT, r0, r1, D, False, order)
        return D

    def _scipy_Xn(self):
        if getattr(self, "_Xn", None) is None:
            self._Xn = np.ascontiguousarray(
                weka_normalise_T(self.X, slice(None), *self.norm).T)
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


class numba_threads:
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
