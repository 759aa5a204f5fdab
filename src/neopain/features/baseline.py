"""Subject baselines: each subject's features relative to its own typical face.

Identity dominates deep face features: two recordings of one infant are closer
than a rest and a pain recording of the same infant are to each other's class.
A subject baseline removes the subject's own typical vector before anything is
learnt, as a clinician compares a face with that infant's resting face:

* ``none``: features as extracted;
* ``center``: minus the subject's median over all of its rows (frames of all of
  its recordings);
* ``standardize``: ``(x - median) / (1.4826 * MAD)`` per subject and feature
  (robust z-score); a feature with zero MAD for that subject is only centred.

Computed from features only, never labels: changing labels leaves the result
bit-identical (tested). It is **transductive**: a test subject's baseline uses
that subject's own unlabelled recordings (all of them, as a clinician's baseline
recording would), never another subject's and never a label.

When it helps and when it hurts: it helps when subjects have recordings of both
states (a rest and a procedure recording, as most pain studies have). Where a
subject has recordings of one state only, its baseline *is* that state and the
signal is removed; the nested search (:mod:`neopain.learn.nested`) may then choose
``none``. A subject with a single recording gets a degenerate baseline: the
recording's own median, so its pooled mean features are close to zero and only
its within-recording variation (std, quantile spread, peaks) remains;
:func:`single_recording_subjects` lists such subjects and the rule logs them.
"""

from __future__ import annotations

import numpy as np

METHODS = ("none", "center", "standardize")
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown subject baseline {method!r}; known: {', '.join(METHODS)}")
    return method


def reference_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust scale (1.4826 MAD; 1 where the MAD is 0) of the rows of ``X``,
    NaNs ignored (an all-NaN column: median 0, scale 1)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] == 0:
        raise ValueError("a baseline needs at least one row")
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(X, axis=0)
            mad = np.nanmedian(np.abs(X - med), axis=0) * MAD_SCALE
    med = np.where(np.isfinite(med), med, 0.0)
    scale = np.where(np.isfinite(mad) & (mad > 0), mad, 1.0)
    return med, scale


def apply_reference(X: np.ndarray, med: np.ndarray, scale: np.ndarray,
                    method: str) -> np.ndarray:
    """``X`` relative to a baseline's statistics (``reference_stats``)."""
    check_method(method)
    X = np.asarray(X)
    if method == "none":
        return X
    out = X.astype(np.float64) - med
    if method == "standardize":
        out /= scale
    return out.astype(X.dtype if X.dtype in (np.float32, np.float64) else np.float64)


def subject_baseline(X: np.ndarray, subjects, method: str = "center") -> np.ndarray:
    """``X`` (rows x features) with each subject's baseline removed (see module doc).

    Returns ``X`` itself for ``none``, else a new array of ``X``'s float dtype. Rows keep
    their order; labels are never an argument."""
    check_method(method)
    if method == "none":
        return X
    X = np.asarray(X)
    subjects = np.asarray(subjects, dtype=object)
    if len(subjects) != len(X):
        raise ValueError(f"{len(subjects)} subject ids for {len(X)} rows")
    out = np.empty(X.shape, dtype=X.dtype if X.dtype in (np.float32, np.float64)
                   else np.float64)
    uniq, inv = np.unique(subjects.astype(str), return_inverse=True)
    for i in range(len(uniq)):
        rows = np.flatnonzero(inv == i)
        med, scale = reference_stats(X[rows])
        out[rows] = apply_reference(X[rows], med, scale, method)
    return out


def single_recording_subjects(subjects, videos) -> list[str]:
    """Subjects with one recording only (their baseline is that recording itself)."""
    subjects = np.asarray(subjects, dtype=str)
    videos = np.asarray(videos, dtype=str)
    pairs = set(zip(subjects.tolist(), videos.tolist()))
    counts: dict[str, int] = {}
    for s, _ in pairs:
        counts[s] = counts.get(s, 0) + 1
    return sorted(s for s, n in counts.items() if n == 1)
