"""Snakemake entry point: the report's landing text, summary and HTML result pages."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import json

    import pandas as pd

    from neopain.report import landing
    from neopain.report import report_pages as rp
    from neopain.core.samples import load_samples

    p, inp, out = sm.params, sm.input, sm.output
    read = pd.read_parquet
    t5, t6, metrics, chance = read(inp.table5), read(inp.table6), read(inp.metrics), \
        read(inp.chance)
    qc, videos = read(inp.qc), read(inp.per_video)
    nested = read(inp.nested) if "nested" in inp.keys() else None
    cfg = dict(sm.config)
    sheet = load_samples(cfg["samples"], cfg["labels"], cfg.get("data_root"), check_paths=False)
    facts = landing.facts(t5, metrics, chance, qc, videos, sheet, cfg, nested)
    pos, neg = facts["positive"], facts["negative"]
    notes = rp.notes_for(dict(p.evaluate))
    n_cfg = int((metrics["level"] == "frame").sum())
    pages = {
        out.table5: rp.best_table_page(t5, chance, "Table 5: deep features, chosen per "
                                       "keyframe", "keyframe accuracy", n_cfg, notes),
        out.table6: rp.best_table_page(t6, chance, "Table 6: deep features, chosen per "
                                       "recording", "recording accuracy", n_cfg, notes),
        out.delong: rp.delong_page(read(inp.delong), notes[:1]),
        out.per_subject: rp.per_subject_page(read(inp.per_subject), pos, neg),
        out.per_video: rp.per_video_page(videos, pos, neg),
        out.qc_page: rp.qc_page(qc, facts["data"]["left_out"], p.show_faces),
    }
    if "table7" in inp.keys():
        pages[out.table7] = rp.table7_page(read(inp.table7), notes)
    if "finetune" in inp.keys():
        pages[out.finetune] = rp.finetune_page(read(inp.finetune), notes)
    for path, text in pages.items():
        provenance.write_text(text, path)
    provenance.write_text(metrics.to_csv(index=False), out.metrics_csv)
    provenance.write_text(landing.landing_rst(facts), out.landing)
    provenance.write_text("\n".join(landing.summary_lines(facts)) + "\n", out.summary)
    provenance.write_text(json.dumps(facts, indent=1, default=str) + "\n", out.facts)


runtime.run(snakemake, main)  # noqa: F821
