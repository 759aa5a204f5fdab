"""Head pose as a control for the facial actions (docs/actions.md, "Head pose").

A reviewer must be able to see that an actions result is not a head-turn detector. Two
tools, both used by select/classify (paper path) and the nested search:

* the **pose-only table** ``actions/pose``: per video, :data:`neopain.features.pose.POSE_STATS` of yaw, pitch and
  roll (the Procrustes fit's rotation, degrees) as the only features, so that Table 5 and
  the nested summary show how much pose alone separates the classes;
* **pose regression** (``actions.pose_regression: true``): in every fit that uses an
  actions table (each fold, inner or outer), a least-squares map from the pose of the
  *training* rows to each feature is fitted (:class:`PoseResidualizer`) and its prediction
  is subtracted from the training and test rows alike. Frame rows carry their frame's
  (yaw, pitch, roll), design ``[1, p, p^2]`` (p = angle / 90); video rows carry pose
  statistics, design ``[1, p]`` (more columns, fewer rows: linear only).

The actions feature tables carry the pose in a ``pose`` column beside ``features``.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from neopain.features.pose import read_pose

log = logging.getLogger(__name__)


def degree_for(n_pose: int) -> int:
    """2 for frame rows (yaw, pitch, roll), 1 for video rows (pose statistics)."""
    return 2 if n_pose <= 3 else 1


class PoseResidualizer(TransformerMixin, BaseEstimator):
    """Regress head pose out of features (scikit-learn transformer).

    ``X``'s last ``n_pose`` columns are pose (degrees); :meth:`fit` solves, on the rows
    it is given (the training subjects'), the least-squares map from the design
    ``[1, p, p^2]`` (``degree`` 2) or ``[1, p]`` (``degree`` 1), p = pose / 90, to every
    other column (NaN pose or features: those rows are left out of the fit);
    :meth:`transform` returns those columns minus the pose-predicted part plus the
    training mean, without the pose columns (rows with NaN pose: left unchanged).
    """

    def __init__(self, n_pose: int = 3, degree: int = 2):
        self.n_pose = n_pose
        self.degree = degree

    def _design(self, P: np.ndarray) -> np.ndarray:
        p = np.asarray(P, np.float64) / 90.0
        parts = [np.ones(len(p)), p] + ([p * p] if self.degree >= 2 else [])
        return np.column_stack(parts)

    def fit(self, X, y=None):
        X = np.asarray(X, np.float64)
        D, P = X[:, : -self.n_pose], X[:, -self.n_pose:]
        ok = np.isfinite(P).all(1) & np.isfinite(D).all(1)
        if not ok.any():
            raise ValueError("pose regression: no training row with finite pose and features")
        design = self._design(P[ok])
        if ok.sum() <= design.shape[1]:
            log.warning("pose regression on %d training rows with %d pose terms: pose explains "
                        "them exactly, the features become constant (too few training rows)",
                        ok.sum(), design.shape[1])
        self.coef_ = np.linalg.lstsq(design, D[ok], rcond=None)[0]
        self.mean_ = D[ok].mean(0)
        self.n_fit_ = int(ok.sum())
        return self

    def transform(self, X):
        X = np.asarray(X, np.float64)
        D, P = X[:, : -self.n_pose], X[:, -self.n_pose:]
        ok = np.isfinite(P).all(1)
        out = D.copy()
        out[ok] = D[ok] - self._design(P[ok]) @ self.coef_ + self.mean_
        return out


def residualize(X: np.ndarray, P: np.ndarray, train: np.ndarray,
                degree: int | None = None) -> np.ndarray:
    """``X`` with pose ``P`` regressed out, the map fitted on the rows ``train`` only
    (boolean mask or indices); every row transformed."""
    X = np.asarray(X, np.float64)
    P = np.asarray(P, np.float64).reshape(len(X), -1)
    deg = degree_for(P.shape[1]) if degree is None else degree
    r = PoseResidualizer(P.shape[1], deg).fit(np.hstack([X[train], P[train]]))
    return r.transform(np.hstack([X, P]))


def table_pose(table, baseline: str = "none") -> np.ndarray:
    """The pose to regress out of a gathered table's features, with the features' subject
    ``baseline`` applied to it too; a clear error for a table without pose."""
    P = read_pose(table)
    if P is None:
        meta = table.schema.metadata or {}
        name = b"/".join(meta.get(k, b"?") for k in (b"neopain.backbone", b"neopain.layer"))
        raise ValueError(f"pose regression: the {name.decode()} feature table has no pose "
                         "column (only the actions frame/video tables carry head pose)")
    if baseline != "none":
        from neopain.features.baseline import subject_baseline

        P = subject_baseline(P, table.column("subject_id").to_numpy(zero_copy_only=False),
                             baseline)
    return np.asarray(P, np.float64)
