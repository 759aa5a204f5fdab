"""Snakemake entry point: Table 7 (strain alone, deep alone, fused) with DeLong tests."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa

    from neopain.learn.evaluate import with_selector_label
    from neopain.learn.metrics import metrics_table, read_score_files
    from neopain.report.markdown import to_markdown, with_ci_columns
    from neopain.learn.fusion import table7

    p = sm.params
    scores, ups = read_score_files(sm.input.scores)
    metrics = metrics_table(scores, p.aggregation, p.quantile, p.n_boot, p.seed, p.ci_level)
    t7, dl = table7(metrics, scores, p.aggregation, p.quantile)
    cfg = {"video_aggregation": p.aggregation, "quantile": p.quantile, "n_boot": p.n_boot,
           "ci_level": p.ci_level, "seed": p.seed, "fusion": dict(p.fusion)}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    for table, path in ((metrics, sm.output.metrics), (t7, sm.output.table7_parquet),
                        (dl, sm.output.delong_parquet)):
        provenance.write_table(pa.Table.from_pandas(table, preserve_index=False), path, prov)
    agg = p.aggregation if p.aggregation != "quantile" else f"{p.quantile:g}-quantile"
    ci = (f"{int(round(p.ci_level * 100))}% CIs in brackets: percentile bootstrap over "
          f"subjects, {p.n_boot} replicates, seed {p.seed}." if p.n_boot else "No CIs.")
    strain_k = p.fusion.get("strain_k", 5)
    notes = [
        "Per backbone x layer x protocol: the best configuration (frame-level test accuracy, "
        "as Table 5; optimistic) of each feature set: strain = the video's optical-strain "
        f"features ({'all' if strain_k is None else f'top {strain_k}'} per fold), deep = "
        f"top-k selected deep features (k in {list(p.fusion.get('k', [15]))}), fused = "
        "both concatenated. Selection, imputation, scaling and classifiers fitted per fold "
        "on training subjects only. selector(n): n = number of features the model used.",
        "p_vs_*: two-sided DeLong test (Sun & Xu 2014) of this row's frame-level AUC "
        "against the named feature set's chosen configuration, on the same pooled test "
        "rows; frame and video level tests below.",
        f"Video level: {agg} of frame scores for AUC, majority vote for accuracy. {ci}",
        f"code {prov['code_version']}; every configuration in fusion_metrics.parquet.",
    ]
    md = to_markdown(with_ci_columns(with_selector_label(t7)), "Table 7: optical strain, "
                     "deep features and their fusion", notes)
    md += "\n" + to_markdown(dl, "DeLong tests between the Table 7 configurations").replace(
        "# DeLong", "## DeLong", 1)
    provenance.write_text(md, sm.output.table7)


runtime.run(snakemake, main)  # noqa: F821
