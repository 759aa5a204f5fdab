"""Snakemake entry point: metrics with CIs, Tables 5/6, DeLong tests, ROC figures."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa

    from neopain.learn.chance import chance_table, with_chance_rows
    from neopain.learn.breakdown import per_subject, per_video
    from neopain.learn.evaluate import (configuration_shown, constant_only, delong_table,
                                        table5, table6, with_selector_label)
    from neopain.learn.metrics import metrics_table, read_score_files
    from neopain.learn.roc import plot_roc, roc_curves_for, table_roc_curves
    from neopain.report.markdown import to_markdown, with_ci_columns

    p = sm.params
    scores, ups = read_score_files(sm.input)
    metrics = metrics_table(scores, p.aggregation, p.quantile, p.n_boot, p.seed, p.ci_level)
    t5, t6 = table5(metrics), table6(metrics)
    dl = delong_table(scores, metrics, p.aggregation, p.quantile)
    subjects = per_subject(scores, t5)
    videos = per_video(scores, t5, p.aggregation, p.quantile)
    chance = chance_table(metrics)
    cfg = {"video_aggregation": p.aggregation, "quantile": p.quantile, "n_boot": p.n_boot,
           "ci_level": p.ci_level, "seed": p.seed}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    for table, path in ((metrics, sm.output.metrics), (t5, sm.output.table5_parquet),
                        (t6, sm.output.table6_parquet), (dl, sm.output.delong_parquet),
                        (subjects, sm.output.per_subject_parquet),
                        (videos, sm.output.per_video_parquet), (chance, sm.output.chance)):
        provenance.write_table(pa.Table.from_pandas(table, preserve_index=False), path, prov)
    agg = p.aggregation if p.aggregation != "quantile" else f"{p.quantile:g}-quantile"
    ci = (f"{int(round(p.ci_level * 100))}% CIs in brackets: percentile bootstrap over "
          f"subjects, {p.n_boot} replicates, seed {p.seed}." if p.n_boot else "No CIs.")
    common = [
        f"Video level: {agg} of frame scores for AUC, majority vote of frame predictions for "
        f"accuracy. Test predictions pooled over folds. {ci}",
        f"code {prov['code_version']}; provenance in each Parquet file's schema metadata.",
    ]
    notes5 = ["Best configuration per backbone x layer x protocol, chosen on frame-level test "
              "accuracy as in Zamzmi et al. 2018 (optimistic); all configurations are in "
              "metrics.md."] + common
    notes6 = ["As Table 5, the configuration chosen on video-level test accuracy."] + common

    def constant_note(level):
        groups = constant_only(metrics, level)
        return ([f"Constant predictors (one class for every {level}) are never chosen; "
                 "no configuration predicts both classes for: "
                 + "; ".join(" ".join(map(str, g)) for g in groups) + "."] if groups else
                [f"Constant predictors (one class for every {level}) are never chosen. "
                 "chance: always the larger class, AUC 0.5."])
    notes5 += constant_note("frame")
    notes6 += constant_note("video")
    shown5, shown6 = (with_chance_rows(with_selector_label(t), chance) for t in (t5, t6))
    provenance.write_text(to_markdown(with_ci_columns(shown5),
                                      "Table 5: deep features (chosen at frame level)",
                                      notes5), sm.output.table5)
    provenance.write_text(to_markdown(with_ci_columns(shown6),
                                      "Table 6: deep features (chosen at video level)",
                                      notes6), sm.output.table6)
    provenance.write_text(to_markdown(dl, "DeLong tests: best ReliefF vs best SU "
                                      "configuration", ["Two-sided DeLong test of the AUC "
                                      "difference on the same pooled test rows, clustered "
                                      "by subject (Obuchowski 1997): subjects, not frames, "
                                      "are the independent units."]), sm.output.delong)
    provenance.write_text(to_markdown(configuration_shown(subjects), "Per-subject test "
                                      "results of the Table 5 configurations", ["One row per subject and label y "
                                      "(1 = positive). mean_score: mean frame score "
                                      "(probability or SVM decision value); frame_accuracy / "
                                      "video_accuracy: share of the subject's keyframes / "
                                      "recordings of that label classified correctly."]),
                          sm.output.per_subject)
    provenance.write_text(to_markdown(with_ci_columns(metrics), "All configurations", common),
                          sm.output.metrics_md)
    t5i = t5.set_index(["backbone", "layer", "protocol"])
    for (b, layer, proto), path in zip(p.roc_targets, sm.output.roc):
        part = scores[(scores.backbone == b) & (scores.layer == layer)
                      & (scores.protocol == proto)]
        curves = []
        if (b, layer, proto) in t5i.index:
            row = t5i.loc[(b, layer, proto)]
            curves = roc_curves_for(part, row, p.aggregation, p.quantile)
        plot_roc(curves, path, f"{b} {layer} ({proto}): Table 5 choice",
                 n_boot=min(p.n_boot, 200), seed=p.seed, level=p.ci_level)
    for table, path, title in ((t5, sm.output.roc_table5, "Table 5 choices, per recording"),
                               (t6, sm.output.roc_table6, "Table 6 choices, per recording")):
        plot_roc(table_roc_curves(scores, table, p.aggregation, p.quantile), path, title,
                 n_boot=min(p.n_boot, 200), seed=p.seed, level=p.ci_level)


runtime.run(snakemake, main)  # noqa: F821
