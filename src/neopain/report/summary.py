"""The study's headline: the nested estimate beside the optimistic and typical ones.

One row per estimate and protocol (video level):

* ``nested`` -- the configuration chosen inside each outer fold by inner CV on the
  training subjects (:mod:`neopain.learn.nested`): the honest number, the headline;
* ``best_of_n`` -- the whole-feature configuration with the best pooled test AUC
  among the N candidates of the same search, chosen on test: optimistic;
* ``median`` -- the candidate at the median test AUC of that search;
* ``paper_best_of_n`` / ``paper_median`` -- the same two for the paper's pipeline
  (selector x k x classifier, frame models, video = mean of frame scores; the
  ``evaluate`` stage's metrics): best-of-N is what Table 5 style reporting shows;
* ``permuted`` -- the whole nested search rerun with video labels shuffled
  (seeded): an AUC near 0.5 shows the path cannot leak;
* ``chance`` -- always answering the majority class (AUC 0.5).

CIs: percentile bootstrap over subjects (:func:`neopain.learn.metrics.bootstrap_ci`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neopain.learn.metrics import binary_metrics, bootstrap_ci

COLUMNS = ["estimate", "description", "protocol", "level", "auc", "auc_lo", "auc_hi",
           "balanced_accuracy", "balanced_accuracy_lo", "balanced_accuracy_hi", "accuracy",
           "sensitivity", "specificity", "n_videos", "n_subjects", "n_pos",
           "n_configurations", "optimistic", "configuration", "candidate"]


def _row(estimate, description, protocol, preds: pd.DataFrame, n_boot, seed, level,
         n_configurations=1, optimistic=False, configuration="", candidate=-1):
    y, pred, score = (preds["y"].to_numpy(), preds["pred"].to_numpy(),
                      preds["score"].to_numpy())
    m = binary_metrics(y, pred, score)
    row = {"estimate": estimate, "description": description, "protocol": protocol,
           "level": "video", "auc": m["auc"], "balanced_accuracy": m["balanced_accuracy"],
           "accuracy": m["accuracy"], "sensitivity": m["sensitivity"],
           "specificity": m["specificity"], "n_videos": m["n"],
           "n_subjects": int(preds["subject_id"].nunique()), "n_pos": m["n_pos"],
           "n_configurations": int(n_configurations), "optimistic": bool(optimistic),
           "configuration": configuration, "candidate": int(candidate)}
    ci = (bootstrap_ci(y, pred, score, preds["subject_id"].to_numpy(), n_boot, seed, level,
                       metrics=("auc", "balanced_accuracy")) if n_boot else {})
    for name in ("auc", "balanced_accuracy"):
        row[f"{name}_lo"], row[f"{name}_hi"] = ci.get(name, (np.nan, np.nan))
    return row


def describe(cfg: dict) -> str:
    """A configuration in plain words (no string to parse back: the columns hold it)."""
    if cfg.get("backbone") == "ensemble":
        return f"late fusion ({cfg['model']}) of the best model of each feature table"
    sel = "all features" if cfg.get("selector") in ("all", "", None) else \
        f"{cfg['selector']} top {cfg['k']}"
    return (f"{cfg['backbone']} {cfg['layer']}, baseline {cfg['baseline']}, pooling "
            f"{cfg['pooling']}, {sel}, {cfg['model']} {cfg['params']}")


def candidate_aucs(scores: pd.DataFrame) -> pd.DataFrame:
    """Pooled outer-test AUC of every candidate of a nested run."""
    rows = []
    for cand, g in scores.groupby("candidate", sort=True):
        rows.append({"candidate": cand, "auc": binary_metrics(g["y"], g["pred"],
                                                              g["score"])["auc"]})
    return pd.DataFrame(rows, columns=["candidate", "auc"])


def _median_index(values: pd.Series) -> int:
    """Index of the element at the (lower) median of ``values`` (NaN last)."""
    order = values.fillna(-np.inf).sort_values(kind="stable")
    return order.index[(len(order) - 1) // 2]


def summary_table(nested: dict[str, dict[str, pd.DataFrame]], paper_metrics: pd.DataFrame | None,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """The summary rows of every protocol (module doc). ``nested`` maps protocol to the
    outputs of :func:`neopain.learn.nested.nested_cv` (``predictions``, ``scores``, and
    optionally ``permuted``: the predictions of the label-shuffled rerun)."""
    rows = []
    for proto, res in nested.items():
        preds, scores = res["predictions"], res["scores"]
        n_cand = int(scores["candidate"].nunique())
        choices = res.get("choices")
        n_opt = int(choices["n_candidates"].max()) if choices is not None and len(choices) \
            else n_cand
        rows.append(_row("nested", f"chosen inside each outer fold by {n_opt}-way inner "
                         "cross-validation on training subjects (honest)", proto, preds,
                         n_boot, seed, level, n_opt))
        aucs = candidate_aucs(scores)
        if len(aucs):
            first = scores.drop_duplicates("candidate").set_index("candidate")
            for est, idx, text, opt in (
                    ("best_of_n", aucs["auc"].fillna(-np.inf).idxmax(),
                     "best whole-feature configuration chosen on the test folds", True),
                    ("median", _median_index(aucs["auc"]),
                     "whole-feature configuration at the median test AUC", False)):
                cand = int(aucs.loc[idx, "candidate"])
                part = scores[scores["candidate"] == cand]
                rows.append(_row(est, f"{text} (of {n_cand})", proto, part, n_boot, seed,
                                 level, n_cand, opt, describe(first.loc[cand].to_dict()),
                                 cand))
        if res.get("permuted") is not None and len(res["permuted"]):
            rows.append(_row("permuted", "nested search rerun with shuffled video labels "
                             "(should be near 0.5)", proto, res["permuted"], n_boot, seed,
                             level, n_opt))
        rows += _paper_rows(paper_metrics, proto)
        y = preds["y"].to_numpy()
        major = max(float(np.mean(y == 1)), float(np.mean(y == 0))) if len(y) else np.nan
        rows.append({"estimate": "chance", "description": "always the majority class",
                     "protocol": proto, "level": "video", "auc": 0.5, "auc_lo": np.nan,
                     "auc_hi": np.nan, "balanced_accuracy": 0.5,
                     "balanced_accuracy_lo": np.nan, "balanced_accuracy_hi": np.nan,
                     "accuracy": major, "sensitivity": np.nan, "specificity": np.nan,
                     "n_videos": len(y), "n_subjects": int(preds["subject_id"].nunique()),
                     "n_pos": int((y == 1).sum()), "n_configurations": 0,
                     "optimistic": False, "configuration": "", "candidate": -1})
    return pd.DataFrame(rows, columns=COLUMNS)


def _paper_rows(metrics: pd.DataFrame | None, proto: str) -> list[dict]:
    if metrics is None or not len(metrics):
        return []
    m = metrics[(metrics["protocol"] == proto) & (metrics["level"] == "video")]
    if "constant" in m.columns:  # a constant predictor is never a "best" configuration
        m = m[~m["constant"].fillna(False).astype(bool)]
    if not len(m):
        return []
    m = m.reset_index(drop=True)
    out = []
    for est, idx, text, opt in (
            ("paper_best_of_n", m["auc"].fillna(-np.inf).idxmax(),
             "paper pipeline: best configuration chosen on the test folds", True),
            ("paper_median", _median_index(m["auc"]),
             "paper pipeline: configuration at the median test AUC", False)):
        r = m.loc[idx]
        out.append({
            "estimate": est, "description": f"{text} (of {len(m)})", "protocol": proto,
            "level": "video", **{c: r.get(c, np.nan) for c in (
                "auc", "auc_lo", "auc_hi", "balanced_accuracy", "balanced_accuracy_lo",
                "balanced_accuracy_hi", "accuracy", "sensitivity", "specificity")},
            "n_videos": int(r["n"]), "n_subjects": int(r["n_subjects"]),
            "n_pos": int(r["n_pos"]), "n_configurations": len(m), "optimistic": opt,
            "candidate": -1,
            "configuration": f"{r['backbone']} {r['layer']}, {r['selector']} top {int(r['k'])}, "
                             f"{r['classifier']}"})
    return out


def to_markdown(table: pd.DataFrame, notes: list[str]) -> str:
    """The summary as Markdown: one section per protocol, headline first."""
    from neopain.report.markdown import fmt_cell
    from neopain.report.report_html import MIN_SUBJECTS_CI

    lines = ["# Summary: how well does it recognise pain?", ""]
    lines += [f"> {n}" for n in notes] + [""]
    for proto, part in table.groupby("protocol", sort=False):
        lines += [f"## Protocol `{proto}` (video level)", "",
                  "| estimate | AUC [95% CI] | balanced accuracy [95% CI] | sensitivity | "
                  "specificity | videos (positive) | subjects | what it is |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            def ci(m):
                v, lo, hi = r[m], r[f"{m}_lo"], r[f"{m}_hi"]
                if pd.isna(v):
                    return "n/a"
                if r["estimate"] != "chance" and r["n_subjects"] < MIN_SUBJECTS_CI:
                    return f"{v:.3f} [n/a (too few subjects)]"
                return f"{v:.3f}" if pd.isna(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            what = r["description"] + (" — OPTIMISTIC" if r["optimistic"] else "")
            if r["configuration"]:
                what += f": {r['configuration']}"
            lines.append(f"| {r['estimate']} | {ci('auc')} | {ci('balanced_accuracy')} | "
                         f"{fmt_cell(r['sensitivity'])} | {fmt_cell(r['specificity'])} | "
                         f"{int(r['n_videos'])} ({int(r['n_pos'])}) | {int(r['n_subjects'])} | "
                         f"{what} |")
        lines.append("")
    return "\n".join(lines)


def summary_roc_curves(nested: dict[str, dict[str, pd.DataFrame]], table: pd.DataFrame
                       ) -> list[tuple]:
    """ROC data (label, y, score[, subjects]) of the nested, best-of-N and median rows of
    every protocol, labelled with n, positives and AUC [CI] (no band under 10 subjects)."""
    from neopain.report.report_html import MIN_SUBJECTS_CI

    out = []
    for proto, res in nested.items():
        rows = table[table["protocol"] == proto].set_index("estimate")
        parts = {"nested": res["predictions"]}
        for est in ("best_of_n", "median"):
            if est in rows.index:
                cand = rows.loc[est, "candidate"]
                parts[est] = res["scores"][res["scores"]["candidate"] == cand]
        for est, p in parts.items():
            if est not in rows.index or not len(p):
                continue
            r, y = rows.loc[est], p["y"].to_numpy()
            n_subj = p["subject_id"].nunique()
            label = (f"{proto} {est}{' (optimistic)' if r['optimistic'] else ''}: "
                     f"{len(y)} recordings, {int((y == 1).sum())} positive, AUC "
                     + ("n/a" if pd.isna(r["auc"]) else f"{r['auc']:.3f}"))
            if n_subj < MIN_SUBJECTS_CI:
                out.append((label + ", CI n/a (too few subjects)", y, p["score"].to_numpy()))
            else:
                out.append((label + f" [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]", y,
                            p["score"].to_numpy(), p["subject_id"].to_numpy()))
    return out
