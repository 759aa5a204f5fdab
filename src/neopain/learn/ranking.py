"""The base of the feature rankers (Weka 3.6's ReliefF and Symmetric Uncertainty).

Every ranker is a scikit-learn feature selector (``SelectorMixin`` +
``BaseEstimator``): ``fit(X, y)`` scores every column, ``scores_`` holds one
float64 score per input feature, ``ranking_`` the feature indices by descending
score (ties: lower index first), and the support mask keeps the first
``n_features_to_select`` of the ranking (clipped to the number of features), so
``transform`` and ``get_feature_names_out`` work inside a ``Pipeline``.
Inputs must be finite floats; ``y`` must hold at least two classes. The classes
are those present in ``y`` (Weka counts the values declared in the ARFF header;
a declared but absent class would only change ReliefF's "more than two
classes" rule).
"""

from __future__ import annotations

import os
import sys
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

#: Weka's ``Utils.SMALL``: two doubles closer than this are "equal".
WEKA_EPS = 1e-6
#: Target size of one working block (distance rows, gathered columns, ...).
BLOCK_BYTES = 256 * 2**20


class RankingSelector(SelectorMixin, BaseEstimator):
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
        with torch_threads_kept():
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


class torch_threads_kept:
    """Restore torch's CPU thread count after scoring.  numba's OpenMP threading layer
    resets the OpenMP thread count that torch's CPU kernels share (libgomp): a torch set
    to 1 thread ran on 2 after a ReliefF fit in the same process, oversubscribing a job's
    cores (tests/unit/test_select.py)."""

    def __enter__(self):
        torch = sys.modules.get("torch")
        self.old = torch.get_num_threads() if torch is not None else None

    def __exit__(self, *exc):
        torch = sys.modules.get("torch")
        if torch is not None and self.old is not None and torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)


def n_threads_of(n_jobs) -> int:
    """scikit-learn's convention: None -> 1, -1 -> all CPUs, -2 -> all but one."""
    if n_jobs is None:
        return 1
    if not isinstance(n_jobs, Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be None or a non-zero integer, got {n_jobs!r}")
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + int(n_jobs))
    return int(n_jobs)


def positive_or_none(value, name):
    if value is not None and (not isinstance(value, Integral) or value < 1):
        raise ValueError(f"{name} must be None or a positive integer, got {value!r}")
