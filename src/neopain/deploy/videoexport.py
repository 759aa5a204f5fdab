"""Export of the nested choice: a video-level model as a verifiable artefact.

``export.configuration: nested`` (the default) chooses the configuration exactly as
one outer fold of :mod:`neopain.learn.nested` whose training part is *every subject of
the study's sample sheet*: every candidate of the configured ``nested`` space is
scored by the inner subject-grouped CV (``StratifiedGroupKFold`` by subject, seed
``seed``; inner AUC of the pooled out-of-fold video scores), the best single
candidate (ties: the first in enumeration order) is refitted on all subjects and
calibrated on its inner out-of-fold video scores (``export.calibration``, Platt by
default, folds grouped by subject); the threshold is chosen on those calibrated
out-of-fold probabilities (``export.threshold``). Ensembles are searched too, but
the artefact holds one model: when an ensemble has the higher inner AUC, the best
single candidate is exported and the model card says so.

The artefact (``format_version`` 2, ``level: video`` in ``model.json``; frame-level
artefacts stay version 1) stores, without pickles: the subject baseline method, the
pooling statistics, the imputer's training medians (``video.impute``), the selected
feature indices (``video.selected``, selector/k only), the scaler's mean/scale and
the classifier (linear models: ``coef``/``intercept``; random forests: the tree
arrays of :func:`neopain.deploy.arrays.serialise_pipeline`).

Scoring a recording (:class:`VideoScorer`): its frames' features relative to a
baseline (``reference_stats`` of a *reference* set of frames: the recording's own
tracked frames by default, or a separate baseline recording of the same patient;
see :mod:`neopain.features.baseline`), pooled over a block of frames (an epoch, or a sliding
window) into one vector, imputed, selected, scaled, classified. With the
``frame_scores`` pooling the block's score is the mean of its frames' scores.

The ``export`` rule's side (inputs, model card, reliability report) is
:mod:`neopain.deploy.nestedexport`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any, Mapping

import numpy as np
import pandas as pd

from neopain.features import baseline as bl
from neopain.learn import nested
from neopain.learn import videomodels as vm
from neopain.deploy.arrays import ScoreModel, UnsupportedModelError, serialise_pipeline
from neopain.learn.pooling import _stat, check_pooling

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# the choice: one outer fold whose training part is every subject
# ----------------------------------------------------------------------------
def search_all_subjects(views: dict, cands: list, *, inner_splits: int = 5, seed: int = 0,
                        ensembles=(), pose_regression: bool = False) -> dict[str, Any]:
    """Inner AUC of every candidate over all subjects; the best single candidate, its
    out-of-fold video scores, and the ensembles' inner AUCs (see the module doc)."""
    from threadpoolctl import threadpool_limits

    ref = next(iter(views.values())).videos
    y = ref["y"].to_numpy().astype(int)
    subjects = set(ref["subject_id"])
    folds = nested.inner_folds(ref, subjects, inner_splits, seed)
    if not folds:
        raise ValueError("export.configuration nested: the inner search needs at least 2 "
                         "subjects of each class in the sample sheet")
    fitter = nested.Fitter(seed, pose_regression=pose_regression)
    every = np.arange(len(ref))
    with threadpool_limits(limits=1, user_api="blas"):
        aucs, oof_all = nested.inner_search(views, cands, ref, every, folds, fitter)
        tables = sorted({(c.backbone, c.layer) for c in cands})
        ens = {}
        if len(tables) > 1:
            members = nested.ensemble_members(cands, aucs, tables)
            for e in ensembles:
                a, _ = nested.ensemble_scores(e, members, oof_all, y, folds, ref, every)
                ens[e] = {"inner_auc": a, "members": [asdict(cands[m]) for m in members]}
    finite = [i for i, a in enumerate(aucs) if np.isfinite(a)]
    if not finite:
        raise ValueError("export.configuration nested: no candidate has a finite inner AUC")
    best = max(finite, key=lambda i: (aucs[i], -i))
    table = pd.DataFrame([asdict(c) for c in cands]).assign(inner_auc=aucs)
    return {"best": cands[best], "index": best, "inner_auc": aucs[best],
            "oof": oof_all[best], "y": y, "videos": ref, "folds": folds,
            "candidates": table, "ensembles": ens}


def fit_candidate(cand, view, seed: int = 0, pose_regression: bool = False):
    """The candidate's whole pipeline refitted on every row of the view; with
    ``pose_regression`` and a view with pose, ``(pipeline, pose residualizer)`` (the
    residualizer fitted on every row first; else ``(pipeline, None)``)."""
    from neopain.learn.posecontrol import PoseResidualizer, degree_for
    X, res = view.X, None
    if pose_regression and view.P is not None:
        res = PoseResidualizer(view.P.shape[1], degree_for(view.P.shape[1])).fit(
            np.hstack([view.X, view.P]))
        X = res.transform(np.hstack([view.X, view.P]))
    return vm.fit(vm.make_model(cand.model, json.loads(cand.params), seed, cand.selector,
                                cand.k or None), X, view.y_rows), res


def serialise_video_model(pipe) -> tuple[dict, dict[str, np.ndarray]]:
    """``(spec, arrays)`` of a fitted ``impute -> [select] -> scale -> clf`` pipeline."""
    from sklearn.pipeline import Pipeline

    steps = dict(pipe.named_steps)
    imp = steps["impute"]
    if imp.strategy != "median":
        raise UnsupportedModelError(f"imputer strategy {imp.strategy!r} is not exportable")
    rest = Pipeline([("scale", steps["scale"]), ("clf", steps["clf"])])
    spec, arrays = serialise_pipeline(rest)
    arrays["video.impute"] = np.asarray(imp.statistics_, np.float64)
    spec["n_inputs"] = int(imp.n_features_in_)
    if "select" in steps:
        arrays["video.selected"] = np.flatnonzero(steps["select"].get_support()).astype(np.int64)
    return spec, arrays


# ----------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------
class VideoScorer:
    """NumPy scoring of a video-level artefact (see the module doc)."""

    def __init__(self, info: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
        self.info = dict(info)
        self.baseline = bl.check_method(self.info["baseline"])
        self.frame_scores = self.info["pooling"] == nested.FRAME_SCORES
        self.stats = [] if self.frame_scores else check_pooling(self.info["stats"])
        self.impute = np.asarray(arrays["video.impute"], np.float64)
        sel = arrays.get("video.selected")
        self.selected = None if sel is None else np.asarray(sel, np.int64)
        self.model = ScoreModel(self.info["model"], arrays)
        # head pose regressed out (actions.pose_regression): frames carry their pose as
        # the last n_pose columns, pooled like the features
        self.pose = dict(self.info.get("pose") or {})
        if self.pose:
            from neopain.learn.posecontrol import PoseResidualizer
            r = PoseResidualizer(int(self.pose["n_pose"]), int(self.pose["degree"]))
            r.coef_ = np.asarray(arrays["video.pose_coef"], np.float64)
            r.mean_ = np.asarray(arrays["video.pose_mean"], np.float64)
            self.residualizer = r

    @property
    def n_frame_pose(self) -> int:
        """Pose columns each model-input row must carry after its features in every
        pooled block (0 without pose): yaw/pitch/roll for frame rows, the pose statistics
        for a statistics table's rows (actions/video)."""
        if not self.pose:
            return 0
        nb = 1 if self.frame_scores else len(self.stats)
        return int(self.pose["n_pose"]) // nb

    def _split_pose(self, V: np.ndarray) -> np.ndarray:
        """Model-input rows (features + pose in every pooled block) -> features with the
        pose regressed out."""
        k = self.n_frame_pose
        nb = 1 if self.frame_scores else len(self.stats)
        B = V.reshape(len(V), nb, -1)
        X = B[:, :, :-k].reshape(len(V), -1)
        P = B[:, :, -k:].reshape(len(V), -1)
        return self.residualizer.transform(np.hstack([X, P]))

    def reference(self, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Baseline statistics (median, robust scale) of reference frames ``F``."""
        return bl.reference_stats(F)

    def relative(self, F: np.ndarray, ref: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return bl.apply_reference(F, ref[0], ref[1], self.baseline)

    def pool(self, block: np.ndarray) -> np.ndarray:
        """One pooled vector of a block of (baseline-relative) frames."""
        block = np.asarray(block, np.float64)
        return np.concatenate([_stat(block, s) for s in self.stats])

    def score_vectors(self, V: np.ndarray) -> np.ndarray:
        """Raw scores of model-input rows (pooled vectors, or frames for frame_scores)."""
        V = np.array(V, dtype=np.float64, copy=True)
        if self.pose:
            V = self._split_pose(V)
        if V.ndim != 2 or V.shape[1] != len(self.impute):
            raise ValueError(f"model inputs must be n x {len(self.impute)}, got {V.shape}")
        nan = np.isnan(V)
        if nan.any():
            V[nan] = np.broadcast_to(self.impute, V.shape)[nan]
        if self.selected is not None:
            V = V[:, self.selected]
        return self.model.positive_score(V)

    def score_block(self, rel: np.ndarray) -> float:
        """Raw score of one block of baseline-relative frames (NaN for an empty block)."""
        if len(rel) == 0:
            return float("nan")
        if self.frame_scores:
            return float(np.mean(self.score_vectors(rel)))
        return float(self.score_vectors(self.pool(rel)[None, :])[0])

    def score_frames(self, F: np.ndarray, reference: np.ndarray | None = None) -> float:
        """Raw score of one recording's frames ``F`` with the baseline from
        ``reference`` frames (default: ``F`` itself)."""
        ref = self.reference(F if reference is None else reference)
        return self.score_block(self.relative(F, ref))


def window_scores(scorer: VideoScorer, rel: np.ndarray, t: np.ndarray, ok: np.ndarray,
                  window: float) -> np.ndarray:
    """Per frame: the raw score of the ok frames within ``window / 2`` seconds of it
    (the block pooled like a video); NaN for frames that are not ok."""
    t = np.asarray(t, np.float64)
    idx = np.flatnonzero(ok)
    out = np.full(len(t), np.nan)
    ts = t[idx]
    half = window / 2.0
    lo = np.searchsorted(ts, ts - half - 1e-9, side="left")
    hi = np.searchsorted(ts, ts + half + 1e-9, side="right")
    for j, i in enumerate(idx):
        out[i] = scorer.score_block(rel[idx[lo[j]:hi[j]]])
    return out


# ----------------------------------------------------------------------------
# the artefact
# ----------------------------------------------------------------------------
def export_nested_model(tables: dict, spec: Mapping[str, Any], out, *, pipelines: Mapping,
                        provenance: Mapping[str, Any], seed: int = 0,
                        calibration: str = "platt", threshold: str | float = "youden",
                        name: str | None = None, embed_weights: Mapping | None = None,
                        pose_regression: bool = False) -> dict[str, Any]:
    """Choose (:func:`search_all_subjects`), refit, calibrate and write the artefact.

    ``tables``: ``{(backbone, layer): (X frames, meta with video_id, subject_id, y)}``;
    ``spec``: the ``nested`` configuration (baselines, poolings, selection, models,
    ensembles, inner_splits); ``pipelines``: per backbone, the unfitted settings of
    :func:`neopain.deploy.refit.export_model` (labels, track, crop, backbone ...);
    ``embed_weights``: per backbone, ``{file name: bytes}`` to embed (None: referenced)."""
    from neopain.learn.calibrate import choose_threshold, fit_calibrator
    from neopain.deploy.artefact import VIDEO_FORMAT_VERSION, write_artefact

    tables, dropped = nested.common_videos(tables)
    if dropped:
        log.warning("videos missing from some feature tables, left out: %s", dropped)
    poolings = dict(spec["poolings"])
    views = nested.build_views(tables, spec["baselines"], poolings)
    cands = nested.candidates(views, list(spec["selection"]), dict(spec["models"]))
    res = search_all_subjects(views, cands, inner_splits=int(spec.get("inner_splits", 5)),
                              seed=seed, ensembles=list(spec.get("ensembles") or []),
                              pose_regression=pose_regression)
    cand, y = res["best"], res["y"]
    view = views[cand.view]
    pipe, resid = fit_candidate(cand, view, seed, pose_regression)
    mspec, arrays = serialise_video_model(pipe)
    pose_info = None
    if resid is not None:
        from neopain.features.pose import ANGLES
        arrays["video.pose_coef"] = resid.coef_
        arrays["video.pose_mean"] = resid.mean_
        pose_info = {"angles": list(ANGLES), "n_pose": int(resid.n_pose),
                     "degree": int(resid.degree), "fitted_on": "every training video"}
    oof = res["oof"]
    cal = fit_calibrator(oof, y, calibration)
    p_oof = cal.apply(oof)
    thr = choose_threshold(y, p_oof, threshold)
    raw = vm.positive_score(pipe, view.X if resid is None else
                            resid.transform(np.hstack([view.X, view.P])))
    if cand.pooling == nested.FRAME_SCORES:   # frame rows -> the video's mean score
        raw = nested.video_mean_scores(view, np.arange(len(raw)), raw, raw,
                                   len(view.videos))[0]
    better = {k: v for k, v in res["ensembles"].items()
              if np.isfinite(v["inner_auc"]) and v["inner_auc"] > res["inner_auc"]}
    X = tables[(cand.backbone, cand.layer)][0]
    pl = dict(pipelines[cand.backbone])
    embed_weights = (embed_weights or {}).get(cand.backbone)
    model = {
        "name": name or f"{cand.backbone}/{cand.layer} {cand.baseline} {cand.pooling} "
                        f"{cand.model} (nested choice)",
        "level": "video",
        "labels": list(pl["labels"]), "positive_label": pl["positive_label"],
        "configuration": {**asdict(cand), "protocol": "all subjects (nested inner CV)",
                          "classifier": cand.model},
        "fps_for_images": float(pl["fps_for_images"]),
        "track": dict(pl["track"]), "crop": dict(pl["crop"]),
        "tracker_weights": dict(pl["tracker_weights"]),
        "backbone": {**dict(pl["backbone"]), "layer": cand.layer,
                     "feature_dim": int(X.shape[1]), "embedded": bool(embed_weights)},
        "video": {"baseline": cand.baseline, "pooling": cand.pooling,
                  "stats": ([] if cand.pooling == nested.FRAME_SCORES
                            else list(poolings[cand.pooling])),
                  "selector": cand.selector, "k": cand.k, "model": mspec,
                  "model_name": cand.model, "params": json.loads(cand.params),
                  **({"pose": pose_info} if pose_info else {})},
        "model": {**mspec, "name": cand.model, "params": json.loads(cand.params)},
        "choice": {"method": "nested inner CV over all subjects of the sample sheet",
                   "inner_auc": res["inner_auc"], "n_candidates": len(cands),
                   "n_inner_folds": len(res["folds"]), "inner_splits":
                   int(spec.get("inner_splits", 5)), "seed": seed,
                   "ensembles": res["ensembles"],
                   "ensemble_would_win": sorted(better)},
        "calibration": {**cal.to_dict(), "n_splits": len(res["folds"]),
                        "grouped_by": "subject", "on": "inner out-of-fold video scores of "
                        "the chosen candidate (the same folds as the choice)"},
        "threshold": {"value": thr, "rule": threshold if isinstance(threshold, str)
                      else "fixed", "on": "calibrated out-of-fold probabilities of the "
                      "training videos", "decision": "pain when probability >= value"},
        "seed": seed,
    }
    vids = res["videos"]
    uniq, counts = np.unique(vids["subject_id"], return_counts=True)
    prov = {**dict(provenance),
            "training": {"n_videos": int(len(y)), "n_positive": int(y.sum()),
                         "subjects": uniq.tolist(), "videos_per_subject": counts.tolist()},
            "calibration_folds": [{"train_subjects": sorted(a), "test_subjects": sorted(b)}
                                  for a, b in res["folds"]]}
    extra = {f"weights/{k}": v for k, v in (embed_weights or {}).items()}
    digest = write_artefact(out, model, prov, arrays, extra,
                            format_version=VIDEO_FORMAT_VERSION)
    log.info("exported the nested choice %s to %s (sha256 %s)", cand, out, digest)
    return {"sha256": digest, "raw": raw, "probability": cal.apply(raw), "oof": oof,
            "p_oof": p_oof, "threshold": thr, "calibrator": cal, "candidate": cand,
            "inner_auc": res["inner_auc"], "videos": vids, "y": y, "model": model,
            "pipeline": pipe, "view": view, "search": res, "better_ensembles": better}
