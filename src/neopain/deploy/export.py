"""The ``export`` rule with a best or named configuration (the paper path).

What is exported
    One configuration of the study -- the best of Table 5 (frame accuracy, ties frame
    AUC, over every backbone x layer x protocol, or within ``export.protocol``) or a
    named one (:mod:`neopain.deploy.choose`) -- *refitted on every subject of the
    study's sample sheet* and calibrated by subject-grouped cross-validation
    (:mod:`neopain.deploy.refit`). Tracker, crop and backbone settings are those of the
    study (:mod:`neopain.deploy.study`, shared with :mod:`neopain.deploy.nestedexport`).

:func:`export_study` reads the finished study's results, writes the artefact
(:mod:`neopain.deploy.artefact`), the training scores, the reliability report of the
evaluation folds and the model card.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from neopain.deploy.artefact import FORMAT, FORMAT_VERSION
from neopain.deploy.choose import Configuration, study_configuration
from neopain.deploy.refit import evaluation_calibration, export_model, study_settings
from neopain.deploy.study import study_pipeline, study_provenance


def _metrics_record(metrics: pd.DataFrame, cfg: Configuration) -> dict:
    m = metrics[(metrics["backbone"] == cfg.backbone) & (metrics["layer"] == cfg.layer)
                & (metrics["protocol"] == cfg.protocol) & (metrics["selector"] == cfg.selector)
                & (metrics["k"] == cfg.k) & (metrics["classifier"] == cfg.classifier)]
    out = {}
    for _, r in m.iterrows():
        out[str(r["level"])] = {k: (None if isinstance(v, float) and np.isnan(v) else v)
                                for k, v in r.items() if k not in (
                                    "backbone", "layer", "protocol", "selector", "k",
                                    "classifier", "level")}
    return out


def export_study(study: Mapping[str, Any], *, table5: str | Path, metrics: str | Path,
                 features: str | Path, split: str | Path, scores: str | Path,
                 samples: str | Path, out: Mapping[str, str | Path]) -> dict[str, Any]:
    """The ``export`` rule: choose, refit, calibrate, write the artefact and its report.

    ``out`` keys: ``model``, ``card``, ``reliability`` (PNG), ``calibration_md``,
    ``calibration`` (Parquet of the evaluation folds' calibrated test rows),
    ``training_scores`` (Parquet: every training frame's score and probability from the
    fitted scikit-learn pipeline at export time, for round-trip checks).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.core import provenance as prov_mod
    from neopain.learn.calibrate import brier_score, expected_calibration_error, plot_reliability, \
        reliability_table
    from neopain.report.markdown import to_markdown
    from neopain.features.tables import feature_matrix

    exp = dict(study.get("export") or {})
    t5 = pq.read_table(table5).to_pandas()
    cfg, how = study_configuration(study, t5)
    st = study_settings(study, cfg)
    table = pq.read_table(features)
    if (table.schema.metadata or {}).get(b"neopain.backbone", cfg.backbone.encode()) \
            != cfg.backbone.encode():
        raise ValueError(f"{features}: not the {cfg.backbone} feature table")
    X = feature_matrix(table)
    y = np.asarray(table.column("y").to_pylist(), np.int8)
    subjects = np.asarray(table.column("subject_id").to_pylist(), dtype=object).astype(str)
    fprov = prov_mod.read_provenance(features)
    sources = dict(fprov.get("sources") or {})
    if cfg.backbone == "actions" and (study.get("actions") or {}).get("pose_regression"):
        raise ValueError(f"export: {cfg.label()} was evaluated with actions.pose_regression, "
                         "which a frame-level artefact does not hold; export it with "
                         "export.configuration: nested (the video-level artefact does)")
    from neopain.deploy.actionsmodel import check_exportable

    check_exportable(cfg.backbone, cfg.layer, level="frame")
    pipeline, embed = study_pipeline(study, cfg.backbone, cfg.layer, sources, features)
    wsha = pipeline["backbone"]["weights_sha256"]
    wfile = pipeline["backbone"]["weights_file"]
    mrec = _metrics_record(pq.read_table(metrics).to_pandas(), cfg)
    t5row = t5[(t5["backbone"] == cfg.backbone) & (t5["layer"] == cfg.layer)
               & (t5["protocol"] == cfg.protocol)]
    provenance = study_provenance(study, samples, sources)
    sheet_sha = provenance["training_data"]["sample_sheet_sha256"]
    provenance["training_data"].update({"feature_table": str(features),
                                        "feature_table_sha256": prov_mod.sha256_file(features)})
    provenance.update({
        "weights": {wfile: wsha,
                    **{k[8:]: v for k, v in sources.items() if k.startswith("weights:")}},
        "configuration_choice": how,
        "evaluation": {"protocol": cfg.protocol, "metrics": mrec,
                       "table5_row": (t5row.iloc[0].to_dict() if len(t5row) else None),
                       "settings": dict(study.get("evaluate") or {}),
                       "note": "test-fold metrics of the study (subject-bootstrap CIs); the "
                               "exported model itself is refitted on all subjects"},
    })
    method = exp.get("calibration", "platt")
    n_splits = int(exp.get("calibration_splits", 5))
    thr_rule = exp.get("threshold", "youden")
    res = export_model(X, y, subjects, cfg, st, out["model"], pipeline=pipeline,
                       provenance=provenance, calibration=method,
                       calibration_splits=n_splits, threshold=thr_rule,
                       embed_weights=embed, name=exp.get("name"))

    # training scores (fitted scikit-learn pipeline, at export time)
    ts = pd.DataFrame({
        "video_id": table.column("video_id").to_pylist(), "subject_id": subjects,
        "frame": np.asarray(table.column("frame").to_pylist(), np.int32), "y": y,
        "score": res["raw"], "probability": res["probability"],
        "oof_score": res["oof"], "oof_probability": res["p_oof"]})
    p_rec = prov_mod.make_provenance("export", {"export": exp}, {"model": res["sha256"]},
                                     upstream=[fprov], params={"configuration": asdict(cfg)})
    prov_mod.write_table(pa.Table.from_pandas(ts, preserve_index=False),
                         out["training_scores"], p_rec)

    # reliability on the study's evaluation folds
    split_df = pq.read_table(split).to_pandas()
    sc = pq.read_table(scores).to_pandas()
    sc = sc[(sc["k"] == cfg.k) & (sc["classifier"] == cfg.classifier)]
    ev, fold_recs = evaluation_calibration(X, y, subjects, split_df, sc, cfg, st, method,
                                           n_splits, thr_rule)
    prov_mod.write_table(pa.Table.from_pandas(ev, preserve_index=False), out["calibration"],
                         p_rec)
    curves, lines = [], []
    cal_rows = ev[np.isfinite(ev["probability"].to_numpy(np.float64))]
    if len(cal_rows):
        curves.append(("test folds, calibrated on training subjects",
                       cal_rows["y"].to_numpy(), cal_rows["probability"].to_numpy()))
    score_is_proba = res["model"]["model"]["classifier"]["score"] == "proba"
    if score_is_proba and len(ev):
        curves.append(("test folds, uncalibrated", ev["y"].to_numpy(),
                       ev["score"].to_numpy()))
    summary_rows = []
    for label, yy, pp in curves:
        summary_rows.append({"predictions": label, "n": int(np.isfinite(pp).sum()),
                             "brier": brier_score(yy, pp),
                             "ece": expected_calibration_error(yy, pp)})
    plot_reliability(curves, out["reliability"],
                     f"Reliability on the evaluation folds\n{cfg.label()}")
    cal = res["calibrator"]
    lines.append(to_markdown(pd.DataFrame(summary_rows, columns=["predictions", "n", "brier",
                                                                 "ece"]),
                             "Calibration on the study's evaluation folds", [
        f"Configuration {cfg.label()}; calibration {method}, fitted per outer fold on "
        f"out-of-fold scores of that fold's training subjects only (inner folds grouped by "
        f"subject, up to {n_splits}), applied to the fold's test scores. ECE: 10 "
        "equal-width bins. Test subjects never enter a calibrator.",
        f"Exported calibrator (all subjects): {cal.to_dict()['method']} "
        + (f"a={cal.a:.6g}, b={cal.b:.6g}" if cal.method == "platt" else
           f"{len(cal.x)} thresholds" if cal.method == "isotonic" else "")
        + f"; decision threshold {res['threshold']:.4f} ({thr_rule}, on calibrated "
          "out-of-fold probabilities of the training subjects)."]))
    fr = pd.DataFrame([{"fold": r["fold"], "test_subjects": ",".join(r["test_subjects"]),
                        "n_train_subjects": len(r["train_subjects"]), "status": r["status"]}
                       for r in fold_recs])
    lines.append(to_markdown(fr, "Evaluation folds"))
    if len(cal_rows):
        bins = reliability_table(cal_rows["y"], cal_rows["probability"])
        bins[["bin", "n"]] = bins[["bin", "n"]].astype(str)
        lines.append(to_markdown(bins, "Reliability bins (calibrated test predictions)"))
    prov_mod.write_text("\n".join(lines), out["calibration_md"])

    # model card
    card = [f"# Exported model: {res['model']['name']}", "",
            f"* artefact: `{out['model']}` (sha256 `{res['sha256']}`, format {FORMAT} "
            f"version {FORMAT_VERSION})",
            f"* configuration: {cfg.label()} -- {how}",
            f"* refitted on all {len(np.unique(subjects))} subjects / {len(y)} keyframes of "
            f"the study (selector, scaler, classifier on these rows only)",
            f"* backbone weights: `{wfile}` sha256 `{wsha}`"
            + (" (embedded)" if embed else " (referenced, verified at load)"),
            f"* calibration: {method}, {n_splits}-fold grouped by subject on the training "
            f"subjects; threshold {res['threshold']:.4f} ({thr_rule})",
            f"* training sample sheet sha256 `{sheet_sha}`; code {prov_mod.code_version()}",
            "", "## Evaluation of this configuration (study test folds)", ""]
    for level, rec in mrec.items():
        def ci(m):
            v, lo, hi = rec.get(m), rec.get(f"{m}_lo"), rec.get(f"{m}_hi")
            if v is None:
                return "n/a"
            return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
        card.append(f"* {level}: accuracy {ci('accuracy')}, AUC {ci('auc')}, n {rec.get('n')},"
                    f" subjects {rec.get('n_subjects')}")
    card += ["", "Predict: `neopain predict " + str(out["model"]) + " VIDEO... --out DIR`", ""]
    prov_mod.write_text("\n".join(card), out["card"])
    return {**res, "configuration": cfg, "evaluation": ev, "folds_eval": fold_recs}
