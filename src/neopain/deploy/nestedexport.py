"""The ``export`` rule with ``export.configuration: nested`` (docs/export.md).

Reads the nested search's feature tables, runs :func:`neopain.deploy.videoexport.
export_nested_model` (the choice over every subject, refit, calibration, artefact),
and writes the same report files as the paper path: the model card (configuration,
inner AUC, the study's nested estimate with CIs, the best candidates), the
reliability diagram and table of the nested estimate's outer-test predictions, and
the training videos' scores.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Mapping

import numpy as np
import pandas as pd

from neopain.deploy.videoexport import export_nested_model

log = logging.getLogger(__name__)


def nested_estimate(summary, protocol: str | None) -> dict | None:
    """The study's nested estimate rows (``results/evaluation/summary.parquet``) of
    ``protocol`` (default: every protocol), metrics with CIs; None without the file."""
    from pathlib import Path

    if not summary or not Path(summary).is_file():
        return None
    t = pd.read_parquet(summary)
    t = t[t["estimate"] == "nested"]
    if protocol:
        t = t[t["protocol"] == protocol]
    keep = ["protocol", "auc", "auc_lo", "auc_hi", "balanced_accuracy",
            "balanced_accuracy_lo", "balanced_accuracy_hi", "sensitivity", "specificity",
            "n_videos", "n_subjects", "description"]
    return {str(r["protocol"]): {k: r[k] for k in keep if k in t.columns}
            for _, r in t.iterrows()}


def export_nested_study(study: Mapping[str, Any], *, features: Mapping[tuple, Any],
                        samples, out: Mapping[str, Any], summary=None,
                        predictions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``export`` rule with ``export.configuration: nested``: the search, the
    artefact and its report (``out`` keys as :func:`neopain.deploy.export.export_study`).
    ``features``: ``{(backbone, layer): feature table}`` of the nested tables;
    ``predictions``: ``{protocol: results/nested/<protocol>/predictions.parquet}`` (the
    nested estimate's calibrated test scores, for the reliability report)."""
    import pyarrow as pa

    from neopain.core import provenance as prov_mod
    from neopain.learn.calibrate import (brier_score, expected_calibration_error, plot_reliability,
                            reliability_table)
    from neopain.report.markdown import to_markdown
    from neopain.deploy.artefact import FORMAT, VIDEO_FORMAT_VERSION
    from neopain.deploy.study import study_pipeline, study_provenance
    from neopain.features.tables import read_features

    exp = dict(study.get("export") or {})
    spec = dict(study["nested"])
    seed = int(study["seed"])
    from neopain.deploy.actionsmodel import is_exportable

    pose_regression = bool((study.get("actions") or {}).get("pose_regression", False))
    tables, pipelines, embeds, fprovs, sources = {}, {}, {}, [], {}
    skipped = [f"{b}/{layer}" for b, layer in features if not is_exportable(b, layer)]
    if skipped:
        log.warning("not exportable (whole-recording statistics), left out of the export's "
                    "search: %s", skipped)
    features = {k: f for k, f in features.items() if is_exportable(*k)}
    if not features:
        raise ValueError(f"export: none of the nested tables is exportable ({skipped}); "
                         "add a frame-level table (e.g. actions/frame) to nested.tables")
    for (b, layer), f in features.items():
        tables[(b, layer)] = read_features(f, pose=pose_regression)
        fp = prov_mod.read_provenance(f)
        fprovs.append(fp)
        src = dict(fp.get("sources") or {})
        sources.update(src)
        if b not in pipelines:
            pipelines[b], embeds[b] = study_pipeline(study, b, layer, src, f)
    protocol = exp.get("protocol")
    estimate = nested_estimate(summary, protocol)
    provenance = study_provenance(study, samples, sources)
    sheet_sha = provenance["training_data"]["sample_sheet_sha256"]
    provenance["training_data"]["feature_tables"] = {
        f"{b}/{layer}": {"path": str(f), "sha256": prov_mod.sha256_file(f)}
        for (b, layer), f in features.items()}
    provenance.update({
        "configuration_choice": "nested: inner subject-grouped CV over every subject of the "
                                "sample sheet (the same search as each outer fold of the "
                                "nested estimate)"
                                + (f"; not exportable, left out of this search: {skipped}"
                                   if skipped else ""),
        "pose_regression": pose_regression,
        "evaluation": {"nested_estimate": estimate,
                       "note": ("the study's nested estimate (results/evaluation/summary."
                                "parquet, subject-bootstrap CIs): the honest number for "
                                "this way of choosing; the exported model itself is chosen "
                                "and refitted on all subjects") if estimate is not None else
                       "no results/evaluation/summary.parquet (nested.enabled: false): no "
                       "nested estimate of this way of choosing"},
    })
    method = exp.get("calibration", "platt")
    thr_rule = exp.get("threshold", "youden")
    res = export_nested_model(tables, spec, out["model"], pipelines=pipelines,
                              provenance=provenance, seed=seed, calibration=method,
                              threshold=thr_rule, name=exp.get("name"), embed_weights=embeds,
                              pose_regression=pose_regression)
    cand = res["candidate"]
    vids = res["videos"]
    ts = pd.DataFrame({"video_id": vids["video_id"].to_numpy(),
                       "subject_id": vids["subject_id"].to_numpy(), "y": res["y"],
                       "score": res["raw"], "probability": res["probability"],
                       "oof_score": res["oof"], "oof_probability": res["p_oof"]})
    p_rec = prov_mod.make_provenance("export", {"export": exp, "nested": spec},
                                     {"model": res["sha256"]}, upstream=fprovs,
                                     params={"configuration": asdict(cand)})
    prov_mod.write_table(pa.Table.from_pandas(ts, preserve_index=False),
                         out["training_scores"], p_rec)

    # reliability: the nested estimate's test predictions (calibrated inside each outer
    # fold on its training subjects only), and the training videos' out-of-fold ones
    preds = []
    for proto, f in sorted((predictions or {}).items()):
        if protocol and proto != protocol:
            continue
        preds.append(pd.read_parquet(f).assign(protocol=proto))
    ev = (pd.concat(preds, ignore_index=True) if preds else pd.DataFrame(
        columns=["protocol", "fold", "video_id", "subject_id", "y", "score", "pred"]))
    ev = ev.rename(columns={"score": "probability"})
    prov_mod.write_table(pa.Table.from_pandas(ev, preserve_index=False), out["calibration"],
                         p_rec)
    curves = []
    if len(ev):
        curves.append(("nested estimate: outer test folds", ev["y"].to_numpy(int),
                       ev["probability"].to_numpy(np.float64)))
    curves.append(("export: out-of-fold, all subjects", ts["y"].to_numpy(int),
                   ts["oof_probability"].to_numpy(np.float64)))
    rows = [{"predictions": lab, "n": int(np.isfinite(pp).sum()),
             "brier": brier_score(yy, pp), "ece": expected_calibration_error(yy, pp)}
            for lab, yy, pp in curves]
    label = (f"{cand.backbone}/{cand.layer} baseline {cand.baseline}, pooling "
             f"{cand.pooling}, {cand.selector}"
             + (f"({cand.k})" if cand.selector != "all" else "")
             + f", {cand.model} {cand.params}")
    plot_reliability(curves, out["reliability"], f"Reliability (video level)\n{label}")
    cal = res["calibrator"]
    lines = [to_markdown(pd.DataFrame(rows, columns=["predictions", "n", "brier", "ece"]),
                         "Calibration (video level)", [
        "Nested estimate: each outer fold's chosen model Platt-calibrated on its inner "
        "out-of-fold scores (training subjects only), applied to the fold's test videos. "
        "Export: the chosen candidate's inner out-of-fold scores over all subjects, "
        f"calibrated by the exported calibrator ({cal.method}; in-sample for the "
        "calibrator itself). ECE: 10 equal-width bins.",
        f"Decision threshold {res['threshold']:.4f} ({thr_rule}, on the calibrated "
        "out-of-fold probabilities)."])]
    if len(ev):
        bins = reliability_table(ev["y"], ev["probability"])
        bins[["bin", "n"]] = bins[["bin", "n"]].astype(str)
        lines.append(to_markdown(bins, "Reliability bins (nested outer test predictions)"))
    prov_mod.write_text("\n".join(lines), out["calibration_md"])

    top = res["search"]["candidates"].sort_values("inner_auc", ascending=False,
                                                  kind="stable").head(5)
    n_subj = int(vids["subject_id"].nunique())
    card = [f"# Exported model: {res['model']['name']}", "",
            f"* artefact: `{out['model']}` (sha256 `{res['sha256']}`, format {FORMAT} "
            f"version {VIDEO_FORMAT_VERSION}, video level)",
            f"* configuration: {label} -- chosen the nested way: inner subject-grouped CV "
            f"({len(res['search']['folds'])} folds) over all {n_subj} subjects, "
            f"{len(res['search']['candidates'])} candidates; inner AUC "
            f"{res['inner_auc']:.3f}",
            f"* subject baseline `{cand.baseline}`; pooling `{cand.pooling}` "
            f"{res['model']['video']['stats'] or '(mean of frame scores)'}",
            f"* refitted on all {n_subj} subjects / {len(vids)} videos of the study",
            f"* calibration: {method} on the chosen candidate's inner out-of-fold video "
            f"scores (grouped by subject); threshold {res['threshold']:.4f} ({thr_rule})",
            f"* training sample sheet sha256 `{sheet_sha}`; code {prov_mod.code_version()}"]
    if res["model"]["video"].get("pose"):
        card.append("* head pose (yaw, pitch, roll) regressed out of the features before the "
                    "model (actions.pose_regression; the map fitted on all training videos)")
    if cand.backbone == "actions" and cand.layer != "frame":
        card.append(f"* actions/{cand.layer}: one statistics row per training recording; "
                    "`neopain predict` recomputes that row from the new recording's face "
                    "mesh for the whole recording (summary `baseline.recording_probability`"
                    ", the training rows' meaning), and for each epoch and timeline window "
                    "as if the block were a recording of its own: those are on the "
                    "training scale only when blocks are about as long as the training "
                    "recordings")
    if skipped:
        card.append(f"* not exportable, left out of the export's search (the nested "
                    f"estimate searched them too): {', '.join(skipped)}")
    if res["better_ensembles"]:
        best_e = max(res["better_ensembles"].items(), key=lambda kv: kv[1]["inner_auc"])
        card.append(f"* NOTE: the late-fusion ensemble `{best_e[0]}` had a higher inner AUC "
                    f"({best_e[1]['inner_auc']:.3f}); the artefact holds one model, so the "
                    "best single candidate is exported")
    card += ["", "## Nested estimate of this way of choosing (study test folds)", ""]
    if estimate:
        for proto, r in estimate.items():
            card.append(f"* {proto}: AUC {r['auc']:.3f} [{r['auc_lo']:.3f}, "
                        f"{r['auc_hi']:.3f}], balanced accuracy "
                        f"{r['balanced_accuracy']:.3f} [{r['balanced_accuracy_lo']:.3f}, "
                        f"{r['balanced_accuracy_hi']:.3f}], {r['n_videos']} videos, "
                        f"{r['n_subjects']} subjects")
    else:
        card.append("* not available (nested.enabled: false)")
    card += ["", "## Best candidates (inner AUC over all subjects)", "",
             "| baseline | pooling | selection | model | params | inner AUC |",
             "|---|---|---|---|---|---|"]
    for _, r in top.iterrows():
        sel = "all" if r["selector"] == "all" else f"{r['selector']} {r['k']}"
        card.append(f"| {r['baseline']} | {r['pooling']} | {sel} | {r['model']} | "
                    f"`{r['params']}` | "
                    f"{r['inner_auc']:.3f} |")
    card += ["", "Predict: `neopain predict " + str(out["model"]) + " VIDEO... --out DIR "
             "[--baseline-video REST_VIDEO]`", ""]
    prov_mod.write_text("\n".join(card), out["card"])
    return {**res, "estimate": estimate, "evaluation": ev}
