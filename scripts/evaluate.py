"""Snakemake entry point: metrics of every configuration and Table 5."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.evaluate import metrics_table, table5, to_markdown

    frames, ups = [], []
    for f in sm.input:
        parts = f.split("/")  # results/scores/{backbone}/{layer}/{protocol}/{selector}.parquet
        df = pq.read_table(f).to_pandas()
        df.insert(0, "layer", parts[-3])
        df.insert(0, "backbone", parts[-4])
        frames.append(df)
        ups.append(provenance.read_provenance(f))
    scores = pd.concat(frames, ignore_index=True)
    metrics = metrics_table(scores, sm.params.aggregation)
    t5 = table5(metrics)
    cfg = {"video_aggregation": sm.params.aggregation}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    provenance.write_table(pa.Table.from_pandas(metrics, preserve_index=False),
                           sm.output.metrics, prov)
    provenance.write_table(pa.Table.from_pandas(t5, preserve_index=False),
                           sm.output.table5_parquet, prov)
    notes = [
        "Best configuration per backbone x layer x protocol, chosen on frame-level test "
        "accuracy as in Zamzmi et al. 2018 Table 5 (optimistic); all configurations are in "
        "metrics.md.",
        f"Video level: {sm.params.aggregation} of frame scores for AUC, majority vote of "
        "frame predictions for accuracy. Test predictions pooled over folds.",
        f"code {prov['code_version']}; provenance in each Parquet file's schema metadata.",
    ]
    provenance.write_text(to_markdown(t5, "Table 5: deep features", notes), sm.output.table5)
    provenance.write_text(to_markdown(metrics, "All configurations"), sm.output.metrics_md)


runtime.run(snakemake, main)  # noqa: F821
