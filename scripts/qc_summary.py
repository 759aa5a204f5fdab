"""Snakemake entry point: gather tracking QC of all videos (table + Markdown list of the
videos that were not ok and of the subjects left out of the splits)."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import json

    from neopain.faces.qc import summary_markdown, summary_table
    from neopain.core.samples import load_samples

    p = sm.params
    samples = load_samples(sm.input.samples, p.labels, p.data_root, check_paths=False)
    rows = [json.loads(open(f).read()) for f in sm.params.qc]
    # params qc and montages are both per video, in the same order
    montages = {r["video_id"]: str(m) for r, m in zip(rows, sm.params.montages, strict=True)}
    table = summary_table(rows, samples, montages)
    prov = provenance.make_provenance(sm.rule, {}, {})
    provenance.write_table(table, sm.output.table, prov)
    provenance.write_text(summary_markdown(table, samples), sm.output.md)


runtime.run(snakemake, main)  # noqa: F821
