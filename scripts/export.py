"""Snakemake entry point: export the nested choice (neopain.deploy.nestedexport), the best or a
named configuration (neopain.deploy.export)."""
import _bootstrap  # noqa: F401
from neopain.core import runtime


def main(sm):
    _export(sm)
    from neopain.report.report_html import write_markdown_page

    # the report shows both as HTML pages (a Markdown entry would only be a download)
    write_markdown_page(sm.output.card, sm.output.card_html, "Model card")
    write_markdown_page(sm.output.calibration_md, sm.output.calibration_html, "Calibration")


def _export(sm):
    import pyarrow.parquet as pq

    from neopain.deploy.choose import study_configuration
    from neopain.deploy.export import export_study

    study = dict(sm.params.study)
    if (study.get("export") or {}).get("configuration", "nested") == "nested":
        from neopain.deploy.nestedexport import export_nested_study

        res = export_nested_study(
            study, features=dict(zip(map(tuple, sm.params.nested_tables), sm.input.features)),
            samples=sm.input.samples, out=dict(sm.output.items()),
            summary=sm.input.summary[0] if sm.input.summary else None,
            predictions=dict(zip(sm.params.nested_protocols, sm.input.nested)))
        runtime.logging.getLogger("neopain.deploy.export").info(
            "exported the nested choice %s (inner AUC %.3f): %s (sha256 %s), threshold %.4f",
            res["candidate"], res["inner_auc"], sm.output.model, res["sha256"],
            res["threshold"])
        return
    cfg, _ = study_configuration(study, pq.read_table(sm.input.table5).to_pandas())
    keys = sm.params.input_keys   # the labels of the inputs, parallel to them
    by_key = {part: dict(zip(map(tuple, keys[part]), getattr(sm.input, part)))
              for part in ("features", "scores")}
    splits = dict(zip(keys["splits"], sm.input.splits))
    try:
        features = by_key["features"][(cfg.backbone, cfg.layer)]
        scores = by_key["scores"][(cfg.backbone, cfg.layer, cfg.protocol, cfg.selector)]
        split = splits[cfg.protocol]
    except KeyError:
        raise ValueError(f"export: no inputs for {cfg.label()} among the rule's inputs") \
            from None
    res = export_study(study, table5=sm.input.table5, metrics=sm.input.metrics,
                       features=features, split=split, scores=scores,
                       samples=sm.input.samples, out=dict(sm.output.items()))
    runtime.logging.getLogger("neopain.deploy.export").info(
        "exported %s: %s (sha256 %s), threshold %.4f", cfg.label(), sm.output.model,
        res["sha256"], res["threshold"])


runtime.run(snakemake, main)  # noqa: F821
