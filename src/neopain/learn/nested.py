"""Nested model selection: an honest estimate of a whole configuration space.

The paper's tables choose the best of N configurations *on the test folds*
(optimistic). Here, for every outer fold of a protocol, each configuration

    (feature table = backbone x layer, subject baseline, pooling, selector/k or
     all features, model, hyper-parameters)   -- a :class:`Candidate` --

is scored by an inner cross-validation over the outer fold's *training*
subjects only (``StratifiedGroupKFold`` by subject, stratified by video label;
inner AUC of the pooled out-of-fold video scores); the best one (ties: the first
in enumeration order, models ordered from most to least regularised) is refitted
on all training subjects and scores the outer test subject(s). Pooled over
outer folds, those scores are the nested estimate.

Every candidate is also refitted on each outer training part and scored on the
outer test part, so the same run gives the paper-style *best-of-N chosen on
test* (optimistic) and the *median configuration* for comparison.

Ensembles across feature tables (``ensembles``): the best candidate of each
table by inner AUC is a member; ``mean`` averages the members' probabilities
after Platt calibration on their inner out-of-fold scores; ``stack`` fits a
logistic regression on those out-of-fold scores (its inner score cross-fitted
over the same inner folds). The members are chosen on the same inner scores, a
mild optimism *inside* the inner loop only: no outer test subject ever enters.

Head pose (``pose_regression``, :mod:`neopain.learn.posecontrol`): a view of an actions table
carries its rows' pose; every fit (inner or outer) then regresses it out of the features
on its own training rows first.

Subject baselines (:mod:`neopain.features.baseline`) are label-free and transductive;
they are applied to each table once, before any split. ``audit`` (a callable
receiving ``(stage, outer_fold, training_subjects)`` at every fit) lets a test
check that no fit ever sees an outer test subject.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from neopain.features import baseline as bl
from neopain.learn import videomodels as vm
from neopain.learn.pooling import check_pooling, pool_videos
from neopain.learn.split import fold_subjects

log = logging.getLogger(__name__)

FRAME_SCORES = "frame_scores"   # pooling name of the frame route: mean of frame scores
ENSEMBLES = ("mean", "stack")
CANDIDATE_COLUMNS = ["backbone", "layer", "baseline", "pooling", "selector", "k", "model",
                     "params"]


@dataclass(frozen=True)
class Candidate:
    """One configuration of the search (``backbone == "ensemble"`` for late fusion)."""

    backbone: str
    layer: str
    baseline: str
    pooling: str
    selector: str = "all"
    k: int = 0
    model: str = "logreg_l2"
    params: str = "{}"

    @property
    def view(self) -> tuple[str, str, str, str]:
        return (self.backbone, self.layer, self.baseline, self.pooling)


@dataclass
class View:
    """Rows (videos, or frames for the frame route) of one table x baseline x pooling."""

    X: np.ndarray
    subjects: np.ndarray     # per row
    row_video: np.ndarray    # per row: index into ``videos``
    videos: pd.DataFrame     # video_id, subject_id, y (one row per video)
    P: np.ndarray | None = None  # per row: head pose to regress out (actions tables)

    @property
    def y_rows(self) -> np.ndarray:
        return self.videos["y"].to_numpy()[self.row_video]


def build_views(tables: dict[tuple[str, str], tuple[np.ndarray, pd.DataFrame]],
                baselines, poolings: dict[str, list]) -> dict[tuple, View]:
    """Every (backbone, layer, baseline, pooling) view of the frame tables
    ``{(backbone, layer): (X, meta with video_id, subject_id, y)[, pose]}``; a table's
    ``pose`` (rows x angles, :mod:`neopain.learn.posecontrol`) gets the same baseline and
    pooling as its features and is carried as the view's ``P``."""
    views = {}
    for (b, layer), (X, meta, *rest) in tables.items():
        P = rest[0] if rest and rest[0] is not None else None
        for base in baselines:
            Xb = bl.subject_baseline(X, meta["subject_id"].to_numpy(), base)
            Pb = (None if P is None else
                  np.asarray(bl.subject_baseline(P, meta["subject_id"].to_numpy(), base),
                             np.float64))
            for pname, stats in poolings.items():
                if pname == FRAME_SCORES:
                    vids = meta["video_id"].to_numpy(dtype=str)
                    uniq, inv = np.unique(vids, return_inverse=True)
                    first = meta.groupby("video_id", sort=True).first().loc[uniq]
                    videos = pd.DataFrame({"video_id": uniq,
                                           "subject_id": first["subject_id"].astype(str).values,
                                           "y": first["y"].to_numpy().astype(int)})
                    views[(b, layer, base, pname)] = View(
                        np.asarray(Xb, dtype=np.float64), meta["subject_id"].to_numpy(dtype=str),
                        inv, videos, Pb)
                    continue
                Xv, vmeta = pool_videos(Xb, meta, check_pooling(stats))
                Pv = None if Pb is None else pool_videos(Pb, meta, check_pooling(stats))[0]
                views[(b, layer, base, pname)] = View(
                    Xv, vmeta["subject_id"].to_numpy(dtype=str), np.arange(len(vmeta)),
                    vmeta[["video_id", "subject_id", "y"]].astype({"y": int}), Pv)
    return views


def candidates(views: dict[tuple, View], selection: list[dict], models: dict[str, dict]
               ) -> list[Candidate]:
    """Every view x selection x model x grid point, in a fixed order."""
    out = []
    for view in views:
        for sel in selection:
            for name, grid in models.items():
                vm.check_model(name)
                for point in vm.grid_points(grid or vm.DEFAULT_GRIDS[name]):
                    out.append(Candidate(*view, selector=sel.get("selector", "all"),
                                         k=int(sel.get("k", 0)), model=name,
                                         params=vm.params_json(point)))
    return out


def _auc(y, s) -> float:
    y = np.asarray(y)
    if len(np.unique(y)) < 2 or not np.all(np.isfinite(s)):
        return float("nan")
    return float(roc_auc_score(y, s))


def video_mean_scores(view: View, rows: np.ndarray, scores: np.ndarray, preds: np.ndarray,
                  n_videos: int) -> tuple[np.ndarray, np.ndarray]:
    """Row scores -> per-video mean (and vote share of the predicted class)."""
    idx = view.row_video[rows]
    cnt = np.bincount(idx, minlength=n_videos).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.bincount(idx, weights=scores, minlength=n_videos) / cnt
        p = np.bincount(idx, weights=preds, minlength=n_videos) / cnt
    return s, p


class Fitter:
    """Fits candidates on subject sets of a view, sharing the preprocessing.

    For the L2-penalised linear models (``videomodels.ROW_SPACE``) with more features
    than training rows, imputation + [selector] + scaling are fitted once per view x
    training part and the rows are projected onto the span of the training rows (SVD):
    the penalised solution lies in that span, so the fit is exact and its cost no
    longer grows with the number of features; every grid point reuses the projection.
    """

    def __init__(self, seed: int, audit=None, pose_regression: bool = False):
        self.seed, self.audit, self._cache = seed, audit, {}
        self.pose_regression = pose_regression

    def rows(self, view: View, tr: np.ndarray, stage="outer", fold=0) -> np.ndarray:
        """The view's rows, with head pose regressed out (fitted on the training rows
        ``tr`` only) for a view with pose under ``pose_regression``."""
        if not self.pose_regression or view.P is None:
            return view.X
        from neopain.learn.posecontrol import residualize
        if self.audit is not None:
            self.audit("pose", fold, set(view.subjects[tr]))
        return residualize(view.X, view.P, tr)

    def clear(self) -> None:
        self._cache.clear()

    def __call__(self, cand: Candidate, view: View, train_s, test_s, stage="outer", fold=0):
        """(video indices of ``test_s``, their scores, predicted classes)."""
        tr = np.isin(view.subjects, list(train_s))
        te = np.isin(view.subjects, list(test_s))
        if self.audit is not None:
            self.audit(stage, fold, set(view.subjects[tr]))
        y = view.y_rows
        rows = np.flatnonzero(te)
        vids = np.unique(view.row_video[rows])
        if not len(rows):  # a held-out subject without features (no face tracked)
            return vids, np.zeros(0), np.zeros(0, int)
        if len(np.unique(y[tr])) < 2:  # a training part with one class: NaN scores
            log.warning("%s fold %s: training rows hold one class; %s not fitted", stage,
                        fold, cand.model)
            return vids, np.full(len(vids), np.nan), np.zeros(len(vids), int)
        params = json.loads(cand.params)
        if cand.model in vm.ROW_SPACE:
            key = (cand.view, cand.selector, cand.k, frozenset(train_s), frozenset(test_s))
            if key not in self._cache:
                X = self.rows(view, tr, stage, fold)
                self._cache[key] = vm.project(X[tr], y[tr], X[rows], cand.selector,
                                              cand.k or None)
            Ztr, Zte = self._cache[key]
            model = vm.fit(vm.make_classifier(cand.model, params, self.seed), Ztr, y[tr])
            score, pred = vm.positive_score(model, Zte), model.predict(Zte)
        else:
            X = self.rows(view, tr, stage, fold)
            model = vm.fit(vm.make_model(cand.model, params, self.seed, cand.selector,
                                         cand.k or None), X[tr], y[tr])
            score, pred = vm.positive_score(model, X[rows]), model.predict(X[rows])
        s, p = video_mean_scores(view, rows, score, pred.astype(float), len(view.videos))
        return vids, s[vids], (p[vids] >= 0.5).astype(int)


def inner_folds(videos: pd.DataFrame, train_s, n_splits: int, seed: int) -> list[tuple]:
    """Subject folds of the training part: [(inner_train_subjects, inner_test_subjects)]."""
    part = videos[videos["subject_id"].isin(list(train_s))]
    per_class = [part.loc[part["y"] == c, "subject_id"].nunique() for c in (0, 1)]
    n = min(int(n_splits), *per_class)
    if n < 2:
        return []
    cv = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
    subj = part["subject_id"].to_numpy()
    folds = []
    for tr, te in cv.split(np.zeros(len(part)), part["y"].to_numpy(), groups=subj):
        folds.append((set(subj[tr]), set(subj[te])))
    return folds


def _platt(oof: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=1e4).fit(oof.reshape(-1, 1), y)


def nested_cv(views: dict[tuple, View], cands: list[Candidate], split: pd.DataFrame, *,
              inner_splits: int = 5, seed: int = 0, ensembles=(), audit=None,
              pose_regression: bool = False) -> dict[str, pd.DataFrame]:
    """The nested search of one protocol (module doc). Returns ``scores`` (outer test
    video scores of every candidate), ``choices`` (per outer fold: the chosen
    configuration and its inner AUC) and ``predictions`` (the nested estimate's
    per-video scores). ``pose_regression``: views with head pose (actions tables) have it
    regressed out inside every fit, on that fit's training rows. Runs with one BLAS
    thread: thousands of small fits, for which BLAS threads cost more than they save
    (measured 3 ms vs microseconds per L-BFGS step on a busy 2-core machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _nested_cv(views, cands, split, inner_splits, seed, ensembles, audit,
                          pose_regression)


def _nested_cv(views, cands, split, inner_splits, seed, ensembles, audit, pose_regression):
    ref = next(iter(views.values())).videos
    for key, v in views.items():
        if not v.videos["video_id"].equals(ref["video_id"]):
            raise ValueError(f"view {key} holds other videos than {next(iter(views))}; "
                             "restrict the tables to common videos first")
    yv = ref["y"].to_numpy()
    protocol = split["protocol"].iloc[0]
    score_rows, choice_rows, pred_rows = [], [], []
    tables = sorted({(c.backbone, c.layer) for c in cands})
    ens = [e for e in ensembles if len(tables) > 1]
    fitter = Fitter(seed, audit, pose_regression)
    for fold in sorted(split["fold"].unique()):
        fitter.clear()
        train_s, test_s = fold_subjects(split, fold)
        tr_v = np.flatnonzero(ref["subject_id"].isin(list(train_s)).to_numpy())
        folds = inner_folds(ref, train_s, inner_splits, seed + int(fold))
        inner_auc, oof_all = inner_search(views, cands, ref, tr_v, folds, fitter, fold)
        outer = {}
        for ci, c in enumerate(cands):
            outer[ci] = fitter(c, views[c.view], train_s, test_s, "outer", fold)
            vids, s, p = outer[ci]
            for v, sc, pr in zip(vids, s, p):
                score_rows.append((protocol, int(fold), ci, v, float(sc), int(pr)))
        options = [(a, ci, None) for ci, a in enumerate(inner_auc)]
        members = ensemble_members(cands, inner_auc, tables)
        for e in ens:
            a, chosen = ensemble_scores(e, members, oof_all, yv[tr_v], folds, ref, tr_v,
                                        outer)
            options.append((a, None, chosen))
        key = [(-(a if np.isfinite(a) else -1.0), i) for i, (a, _, _) in enumerate(options)]
        best = options[min(range(len(options)), key=lambda i: key[i])]
        if best[1] is not None:
            # scores of different models (and folds) pooled: Platt-calibrate the chosen
            # one on its inner out-of-fold scores (training subjects only)
            vids, s, p = outer[best[1]]
            label = asdict(cands[best[1]])
            if np.isfinite(best[0]):
                s = _platt(oof_all[best[1]], yv[tr_v]).predict_proba(s.reshape(-1, 1))[:, 1]
        else:
            vids, s, p, label = best[2]
        choice_rows.append({"protocol": protocol, "fold": int(fold), **label,
                            "inner_auc": best[0], "n_inner_folds": len(folds),
                            "n_candidates": len(options)})
        for v, sc, pr in zip(vids, s, p):
            pred_rows.append({"protocol": protocol, "fold": int(fold),
                              "video_id": ref["video_id"].iloc[v],
                              "subject_id": ref["subject_id"].iloc[v], "y": int(yv[v]),
                              "score": float(sc), "pred": int(pr)})
    scores = pd.DataFrame(score_rows, columns=["protocol", "fold", "candidate", "v", "score",
                                               "pred"])
    cand_df = pd.DataFrame([asdict(c) for c in cands])
    scores = scores.join(cand_df, on="candidate")
    scores["video_id"] = ref["video_id"].to_numpy()[scores["v"]]
    scores["subject_id"] = ref["subject_id"].to_numpy()[scores["v"]]
    scores["y"] = yv[scores["v"]].astype(int)
    scores = scores[["protocol", "fold", "candidate", *CANDIDATE_COLUMNS, "video_id",
                     "subject_id", "y", "score", "pred"]]
    return {"scores": scores, "choices": pd.DataFrame(choice_rows),
            "predictions": pd.DataFrame(pred_rows, columns=[
                "protocol", "fold", "video_id", "subject_id", "y", "score", "pred"])}


def inner_search(views, cands, ref, tr_v, folds, fitter, fold=0) -> tuple[list, dict]:
    """Inner AUC and out-of-fold video scores (over the training videos ``tr_v``) of every
    candidate, the inner ``folds`` being subject sets of the training part."""
    y = ref["y"].to_numpy()[tr_v]
    aucs, oof_all = [], {}
    for ci, c in enumerate(cands):
        oof = np.full(len(ref), np.nan)
        for itr, ite in folds:
            vids, s, _ = fitter(c, views[c.view], itr, ite, "inner", fold)
            oof[vids] = s
        oof_all[ci] = oof[tr_v]
        aucs.append(_auc(y, oof[tr_v]) if folds else float("nan"))
    return aucs, oof_all


def ensemble_members(cands, inner_auc, tables) -> list[int]:
    """Per feature table, the candidate with the best inner AUC (first on ties)."""
    out = []
    for t in tables:
        idx = [i for i, c in enumerate(cands) if (c.backbone, c.layer) == t
               and np.isfinite(inner_auc[i])]
        if idx:
            out.append(max(idx, key=lambda i: (inner_auc[i], -i)))
    return out


def ensemble_scores(kind, members, oof_all, y_tr, folds, ref, tr_v, outer=None):
    """(inner AUC, (video indices, scores, preds, label) of the outer test videos, or None
    without ``outer``) of one late-fusion ensemble."""
    if len(members) < 2 or not folds:
        return float("nan"), None
    O = np.column_stack([oof_all[m] for m in members])
    if not np.all(np.isfinite(O)):
        return float("nan"), None
    if outer is None:
        vids = np.zeros(0, int)
        T = np.zeros((0, len(members)))
    else:
        vids = outer[members[0]][0]
        for m in members[1:]:
            vids = np.intersect1d(vids, outer[m][0])
        T = np.column_stack([outer[m][1][np.searchsorted(outer[m][0], vids)]
                             for m in members])
    if kind == "mean":
        cal = [_platt(O[:, j], y_tr) for j in range(O.shape[1])]
        inner = np.mean([c.predict_proba(O[:, [j]])[:, 1] for j, c in enumerate(cal)], axis=0)
        test = (np.mean([c.predict_proba(T[:, [j]])[:, 1] for j, c in enumerate(cal)], axis=0)
                if len(T) else np.zeros(0))
    else:
        subj = ref["subject_id"].to_numpy()[tr_v]
        inner = np.full(len(y_tr), np.nan)
        for itr, ite in folds:
            a, b = np.isin(subj, list(itr)), np.isin(subj, list(ite))
            if len(np.unique(y_tr[a])) == 2:
                inner[b] = LogisticRegression().fit(O[a], y_tr[a]).predict_proba(O[b])[:, 1]
        test = (LogisticRegression().fit(O, y_tr).predict_proba(T)[:, 1] if len(T)
                else np.zeros(0))
    label = {"backbone": "ensemble", "layer": kind, "baseline": "", "pooling": "",
             "selector": "", "k": 0, "model": kind,
             "params": vm.params_json({"members": [int(m) for m in members]})}
    return _auc(y_tr, inner), (None if outer is None else
                               (vids, test, (test >= 0.5).astype(int), label))


def nested_cv_and_permuted(views: dict[tuple, View], cands: list[Candidate],
                           split: pd.DataFrame, *, permutation: bool = True, workers: int = 1,
                           **kw) -> dict[str, pd.DataFrame]:
    """:func:`nested_cv` (``kw``) plus ``permuted``: the nested estimate's predictions with
    labels shuffled by :func:`permute_labels` (``kw["seed"]``; empty without
    ``permutation``). ``workers`` >= 2 runs the shuffled search in a forked process
    beside the real one (Linux; elsewhere one after the other): the same tables in about
    half the wall time."""
    if not permutation:
        res = nested_cv(views, cands, split, **kw)
        res["permuted"] = res["predictions"].iloc[:0]
        return res
    shuffled = permute_labels(views, kw.get("seed", 0))
    if workers < 2 or not sys.platform.startswith("linux"):  # fork: Linux only
        res = nested_cv(views, cands, split, **kw)
        res["permuted"] = nested_cv(shuffled, cands, split, **kw)["predictions"]
        return res
    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
        other = pool.submit(_predictions, shuffled, cands, split, kw)
        res = nested_cv(views, cands, split, **kw)
        res["permuted"] = other.result()
    return res


def _predictions(views, cands, split, kw):
    return nested_cv(views, cands, split, **kw)["predictions"]


def permute_labels(views: dict[tuple, View], seed: int) -> dict[tuple, View]:
    """The same views with video labels shuffled (seeded; subjects and rows kept)."""
    ref = next(iter(views.values())).videos
    perm = np.random.default_rng(seed).permutation(ref["y"].to_numpy())
    new_y = dict(zip(ref["video_id"], perm))
    out = {}
    for key, v in views.items():
        vids = v.videos.assign(y=v.videos["video_id"].map(new_y).astype(int))
        out[key] = View(v.X, v.subjects, v.row_video, vids, v.P)
    return out


def common_videos(tables: dict) -> tuple[dict, list[str]]:
    """The tables restricted to the videos every one of them holds (and those left out)."""
    sets = [set(t[1]["video_id"]) for t in tables.values()]
    common = set.intersection(*sets) if sets else set()
    dropped = sorted(set.union(*sets) - common) if sets else []
    out = {}
    for key, (X, meta, *rest) in tables.items():
        keep = meta["video_id"].isin(common).to_numpy()
        out[key] = (X[keep], meta[keep].reset_index(drop=True),
                    *[None if r is None else r[keep] for r in rest])
    return out, dropped
