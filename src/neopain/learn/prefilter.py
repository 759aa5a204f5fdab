"""An ANOVA-F prefilter before a costly ranker, for very wide layers.

``Prefiltered`` -- an optional one-way ANOVA F prefilter (``f_classif``) before
either ranker, for very wide layers; not the paper's method (documented there).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from neopain.learn.ranking import RankingSelector
from neopain.learn.relieff import ReliefF


class Prefiltered(RankingSelector):
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
