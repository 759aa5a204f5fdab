"""Snakemake entry point: results/evaluation/summary.{md,parquet}."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.report.summary import summary_table, to_markdown

    p = sm.params
    nested, ups = {}, []
    parts = ("scores", "choices", "predictions", "permuted")
    for i, proto in enumerate(p.protocols):  # inputs listed in the order of p.protocols
        files = {k: sm.input[k][i] for k in parts}
        nested[proto] = {k: pq.read_table(f).to_pandas() for k, f in files.items()}
        ups.append(provenance.read_provenance(files["scores"]))
    metrics = pq.read_table(sm.input.metrics).to_pandas()
    ups.append(provenance.read_provenance(sm.input.metrics))
    table = summary_table(nested, metrics, p.n_boot, p.seed, p.ci_level)
    cfg = {"n_boot": p.n_boot, "seed": p.seed, "ci_level": p.ci_level,
           "protocols": list(p.protocols)}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    provenance.write_table(pa.Table.from_pandas(table, preserve_index=False),
                           sm.output.parquet, prov)
    notes = [
        "Headline: the `nested` row. Its configuration is chosen inside each outer fold "
        "by cross-validation on that fold's training subjects only, then scored on the "
        "held-out subjects: an honest estimate of the whole search.",
        "Rows marked OPTIMISTIC chose their configuration on the test results (as the "
        "papers' tables do); `median` shows a typical configuration; `permuted` reruns the "
        "whole nested search with shuffled labels and should sit near AUC 0.5; `chance` "
        "always answers the majority class.",
        f"{int(round(p.ci_level * 100))}% CIs: percentile bootstrap over subjects, "
        f"{p.n_boot} replicates, seed {p.seed}. Subject baselines (`center`, "
        "`standardize`) use each subject's own unlabelled recordings (transductive).",
        f"code {prov['code_version']}; per-fold choices in results/nested/<protocol>/"
        "choices.parquet, every candidate's test scores in .../scores.parquet.",
    ]
    provenance.write_text(to_markdown(table, notes), sm.output.md)
    from neopain.report.report_pages import summary_page

    provenance.write_text(summary_page(table), sm.output.page)
    from neopain.report.summary import summary_roc_curves
    from neopain.learn.roc import plot_roc

    plot_roc(summary_roc_curves(nested, table), sm.output.roc,
             "Summary: nested estimate vs best-of-N and median, per recording",
             n_boot=min(p.n_boot, 200), seed=p.seed, level=p.ci_level)


runtime.run(snakemake, main)  # noqa: F821
