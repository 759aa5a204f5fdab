"""Snakemake entry point: per-fold feature rankings of one selector."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow.parquet as pq

    from neopain.learn.select import rank_folds

    p = sm.params
    table = pq.read_table(sm.input.features)
    split = pq.read_table(sm.input.split).to_pandas()
    params = dict(p.selector)
    if sm.wildcards.selector == "relieff":
        params.setdefault("n_jobs", sm.threads)  # threads only split work: same scores
    prefilter = dict(p.prefilter or {"method": "none"})
    out = rank_folds(table, split, sm.wildcards.selector, params, p.max_k, prefilter,
                     p.baseline, pose_regression=bool(p.pose_regression),
                     backbone=sm.wildcards.backbone, layer=sm.wildcards.layer)
    ups = [provenance.read_provenance(sm.input.features),
           provenance.read_provenance(sm.input.split)]
    cfg = {"selector": sm.wildcards.selector, **dict(p.selector), "max_k": p.max_k,
           "prefilter": prefilter, "baseline": p.baseline,
           **({"pose_regression": True} if p.pose_regression else {})}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    provenance.write_table(out, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
