"""Refit a frame-level configuration on the training subjects and calibrate it.

:func:`export_model` fits the configuration on *every subject of the study's sample
sheet* (the training data of the bedside model): the selector on those rows only, the
scaler and classifier on the selected columns (float64 copies), the calibrator on
out-of-fold scores of the same subjects with folds grouped by subject
(:func:`neopain.learn.calibrate.grouped_oof_scores`, the whole configuration -- selector
included -- refitted in every inner fold), and the decision threshold on the calibrated
out-of-fold probabilities; then writes the artefact (:mod:`neopain.deploy.artefact`).
:func:`evaluation_calibration` calibrates the study's evaluation folds the same way, on
each fold's training subjects only, for the reliability report.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from neopain.deploy.arrays import serialise_pipeline
from neopain.deploy.artefact import write_artefact
from neopain.deploy.choose import Configuration
from neopain.learn.calibrate import choose_threshold, fit_calibrator, grouped_oof_scores

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Stage settings of the study a configuration is fitted with."""

    selector_params: dict
    prefilter: dict | None
    classifier_params: dict
    preset: str = "paper"
    search: dict | None = None
    seed: int = 0


@dataclass
class Fitted:
    cols: np.ndarray            # selected feature indices, in rank order
    selector_scores: np.ndarray
    pipeline: Any
    chosen_params: dict

    def score(self, X: np.ndarray) -> np.ndarray:
        from neopain.learn.classify import positive_score

        return positive_score(self.pipeline, np.asarray(X[:, self.cols], dtype=np.float64))


def fit_configuration(X: np.ndarray, y: np.ndarray, subjects: np.ndarray,
                      cfg: Configuration, st: Settings) -> Fitted:
    """Selector (top ``k``) -> [scaler] -> classifier on these rows only."""
    import warnings

    from neopain.learn.classify import make_pipeline, make_search
    from neopain.learn.select import make_selector

    y = np.asarray(y).astype(np.int8)
    if len(np.unique(y)) < 2:
        raise ValueError("fitting needs rows of both classes")
    sel = make_selector(cfg.selector, cfg.k, prefilter=st.prefilter,
                        **dict(st.selector_params or {})).fit(X, y)
    cols = np.asarray(sel.ranking_[:cfg.k], dtype=np.int64)
    Xs = np.asarray(X[:, cols], dtype=np.float64)
    pipe = make_pipeline(cfg.classifier, st.classifier_params, st.seed, st.preset,
                         n_features=len(cols))
    chosen = {}
    search = dict(st.search or {})
    model = pipe
    if search.get("enabled"):
        gs = make_search(pipe, cfg.classifier, search, np.asarray(subjects), y, st.seed)
        if gs is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gs.fit(Xs, y, groups=np.asarray(subjects))
            model = gs.best_estimator_
            chosen = {k.removeprefix("clf__"): v for k, v in gs.best_params_.items()}
    if model is pipe:
        pipe.fit(Xs, y)
    return Fitted(cols, np.asarray(sel.scores_, np.float64)[cols], model, chosen)


def study_settings(study: Mapping[str, Any], cfg: Configuration) -> Settings:
    """The study's selector, prefilter, classifier and search settings of ``cfg``."""
    sel = dict((study.get("select") or {}).get("selectors", {}).get(cfg.selector) or {})
    cls = (study.get("classify") or {})
    return Settings(
        selector_params=sel,
        prefilter=dict((study.get("select") or {}).get("prefilter") or {"method": "none"}),
        classifier_params=dict((cls.get("classifiers") or {}).get(cfg.classifier) or {}),
        preset=cls.get("preset", "paper"), search=dict(cls.get("search") or {}),
        seed=int(study["seed"]))


def export_model(
    X: np.ndarray, y: np.ndarray, subjects: np.ndarray, cfg: Configuration, st: Settings,
    out: str | Path, *, pipeline: Mapping[str, Any], provenance: Mapping[str, Any],
    calibration: str = "platt", calibration_splits: int = 5, threshold: str | float = "youden",
    embed_weights: Mapping[str, bytes] | None = None, name: str | None = None,
) -> dict[str, Any]:
    """Fit ``cfg`` on all rows (every training subject), calibrate it by subject-grouped
    cross-validation on the same rows, write the artefact to ``out``.

    ``pipeline``: the study's settings that are not fitted (``labels``,
    ``positive_label``, ``fps_for_images``, ``track``, ``crop``, ``backbone`` with at
    least ``name``, ``layer``, ``weights_file``, ``weights_sha256``). Returns a summary
    with the artefact's sha256, the training scores (``raw``, ``probability``, computed
    with the fitted scikit-learn pipeline) and the calibration folds.
    """
    if cfg.classifier in ("svm", "svm_rbf") and calibration == "none":
        raise ValueError("calibration 'none' with an SVM: decision values are not "
                         "probabilities; use platt or isotonic")
    X = np.asarray(X)
    y = np.asarray(y).astype(np.int8)
    subjects = np.asarray(subjects).astype(str)
    final = fit_configuration(X, y, subjects, cfg, st)
    spec, arrays = serialise_pipeline(final.pipeline)
    arrays["selected_features"] = final.cols
    arrays["selector_scores"] = final.selector_scores

    def fit_score(tr, te):
        return fit_configuration(X[tr], y[tr], subjects[tr], cfg, st).score(X[te])

    oof, folds = grouped_oof_scores(len(y), y, subjects, fit_score, calibration_splits,
                                    st.seed)
    cal = fit_calibrator(oof, y, calibration)
    p_oof = cal.apply(oof)
    thr = choose_threshold(y, p_oof, threshold)
    raw = final.score(X)
    prob = cal.apply(raw)
    model = {
        "name": name or cfg.label(),
        "labels": list(pipeline["labels"]),
        "positive_label": pipeline["positive_label"],
        "configuration": asdict(cfg),
        "fps_for_images": float(pipeline["fps_for_images"]),
        "track": dict(pipeline.get("track") or {}),
        "crop": dict(pipeline.get("crop") or {}),
        "tracker_weights": dict(pipeline.get("tracker_weights") or {}),
        "backbone": {**dict(pipeline["backbone"]), "feature_dim": int(X.shape[1]),
                     "embedded": bool(embed_weights)},
        "selector": {"name": cfg.selector, "k": cfg.k, "params": dict(st.selector_params),
                     "prefilter": dict(st.prefilter or {"method": "none"}),
                     "features": final.cols.tolist(),
                     "fitted_on": "every subject of the study's sample sheet (the training "
                                  "data); no other rows"},
        "model": {**spec, "name": cfg.classifier, "preset": st.preset,
                  "params": dict(st.classifier_params or {}), "chosen_params": final.chosen_params,
                  "fit_dtype": "float64"},
        "calibration": {**cal.to_dict(), "n_splits": calibration_splits,
                        "grouped_by": "subject", "on": "out-of-fold scores of the training "
                        "subjects (selector, scaler and classifier refitted per fold)"},
        "threshold": {"value": thr, "rule": threshold if isinstance(threshold, str)
                      else "fixed", "on": "calibrated out-of-fold probabilities of the "
                      "training subjects", "decision": "pain when probability >= value"},
        "seed": st.seed,
    }
    uniq, counts = np.unique(subjects, return_counts=True)
    prov = {**dict(provenance),
            "training": {"n_rows": int(len(y)), "n_positive": int(y.sum()),
                         "subjects": uniq.tolist(), "rows_per_subject": counts.tolist()},
            "calibration_folds": folds}
    extra = {f"weights/{k}": v for k, v in (embed_weights or {}).items()}
    digest = write_artefact(out, model, prov, arrays, extra)
    log.info("exported %s to %s (sha256 %s)", cfg.label(), out, digest)
    return {"sha256": digest, "raw": raw, "probability": prob, "oof": oof, "p_oof": p_oof,
            "threshold": thr, "calibrator": cal, "folds": folds, "model": model}


def evaluation_calibration(
    X: np.ndarray, y: np.ndarray, subjects: np.ndarray, split: pd.DataFrame,
    scores: pd.DataFrame, cfg: Configuration, st: Settings, method: str = "platt",
    n_splits: int = 5, threshold: str | float = "youden",
) -> tuple[pd.DataFrame, list[dict]]:
    """Calibrated test probabilities of the study's evaluation folds.

    For every outer fold of ``split``: the calibrator (and threshold) is fitted exactly as
    at export, on out-of-fold scores of that fold's *training* subjects only, then applied
    to the fold's stored test scores (``scores``: the classify stage's rows of this
    configuration). A fold whose training part has fewer than 2 subjects (or one class)
    cannot be calibrated by subject: its rows keep ``probability`` NaN and the fold record
    says why. Returns the test rows (``fold, video_id, subject_id, frame, y, score,
    probability, threshold``) and one record per fold.
    """
    from neopain.learn.split import fold_subjects

    subjects = np.asarray(subjects).astype(str)
    y = np.asarray(y).astype(np.int8)
    rows, recs = [], []
    for fold in sorted(scores["fold"].unique()):
        part = scores[scores["fold"] == fold].copy()
        train_s, test_s = fold_subjects(split, fold)
        tr = np.isin(subjects, sorted(train_s))
        rec = {"fold": int(fold), "train_subjects": sorted(train_s),
               "test_subjects": sorted(test_s), "status": "ok"}
        part["probability"] = np.nan
        part["threshold"] = np.nan
        if len(train_s) < 2 or len(np.unique(y[tr])) < 2:
            rec["status"] = (f"not calibrated: {len(train_s)} training subject(s)"
                             if len(train_s) < 2 else "not calibrated: one class")
        else:
            Xtr, ytr, str_ = X[tr], y[tr], subjects[tr]

            def fit_score(a, b):
                return fit_configuration(Xtr[a], ytr[a], str_[a], cfg, st).score(Xtr[b])

            try:
                oof, _ = grouped_oof_scores(len(ytr), ytr, str_, fit_score, n_splits, st.seed)
                cal = fit_calibrator(oof, ytr, method)
                part["probability"] = cal.apply(part["score"].to_numpy())
                part["threshold"] = choose_threshold(ytr, cal.apply(oof), threshold)
            except ValueError as exc:
                rec["status"] = f"not calibrated: {exc}"
        recs.append(rec)
        rows.append(part[["fold", "video_id", "subject_id", "frame", "y", "score",
                          "probability", "threshold"]])
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["fold", "video_id", "subject_id", "frame", "y", "score", "probability",
                 "threshold"])
    return df, recs
