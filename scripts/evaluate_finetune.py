"""Snakemake entry point: frozen features vs fine-tuned vs cascaded, side by side with
DeLong p-values (results/evaluation/finetune.{md,parquet})."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def _read(files):
    """Score tables (labelled by their own backbone/layer columns) as one frame."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = [pq.read_table(f).to_pandas() for f in files]
    ups = [provenance.read_provenance(f) for f in files]
    return (pd.concat(frames, ignore_index=True) if frames else None), ups


def main(sm):
    import numpy as np
    import pyarrow as pa

    from neopain.finetune.compare import comparison_table
    from neopain.learn.evaluate import configuration_shown
    from neopain.report.markdown import to_markdown, with_ci_columns

    p = sm.params
    scores, ups = {}, []
    # frozen: the classify stage's score tables; finetune, cascade: one table per fold
    for method in ("frozen", "finetune", "cascade"):
        scores[method], u = _read(getattr(sm.input, method))
        ups += u
    table = comparison_table(scores, p.aggregation, p.quantile, p.n_boot, p.seed, p.ci_level)
    cfg = {"video_aggregation": p.aggregation, "quantile": p.quantile, "n_boot": p.n_boot,
           "ci_level": p.ci_level, "seed": p.seed, "layer": p.layer}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    provenance.write_table(pa.Table.from_pandas(table, preserve_index=False),
                           sm.output.table, prov)
    shown = with_ci_columns(configuration_shown(table)) if len(table) else table
    for col in [c for c in shown.columns if c.startswith("p_")]:
        shown[col] = [("" if not np.isfinite(v) else f"{v:.3g}") for v in table[col]]
    notes = [
        "frozen: the backbone's frozen features at this layer with the best selector x k x "
        "classifier by frame-level test accuracy (Table 5's choice: optimistic); finetune: "
        "the network fine-tuned per fold on the training subjects (new head); cascade: "
        "fine-tuned first on the auxiliary expression set, then per fold (new head).",
        "p_<level>_vs_<method>: two-sided DeLong test of the AUC difference on the same "
        "pooled test rows (frame: keyframes; video: "
        f"{p.aggregation} of frame scores). Test predictions pooled over folds. "
        + (f"{int(round(p.ci_level * 100))}% CIs: subject bootstrap, {p.n_boot} replicates."
           if p.n_boot else "No CIs."),
    ]
    if not p.cascade:
        notes.append("cascade: not run (finetune.cascade.aux.samples is not set).")
    notes.append(f"code {prov['code_version']}.")
    provenance.write_text(to_markdown(shown, "Frozen features vs fine-tuning vs cascaded "
                                      "fine-tuning", notes), sm.output.md)


runtime.run(snakemake, main)  # noqa: F821
