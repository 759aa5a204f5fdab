"""Snakemake entry point: deep, strain and fused scores of one configuration (Table 7)."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.learn.fusion import FUSION_SCHEMA, fusion_scores, keyframe_strain
    from neopain.features.strainfeatures import table_feature_names
    from neopain.features.tables import feature_matrix

    p = sm.params
    table = pq.read_table(sm.input.features)
    X = feature_matrix(table, p.baseline)
    meta = table.select(["video_id", "subject_id", "frame", "y"]).to_pandas()
    del table
    strain_t = pq.read_table(sm.input.strain)
    S = keyframe_strain(meta, strain_t.to_pandas(), table_feature_names(strain_t),
                        sm.input.strain)
    acts = None
    if list(sm.input.actions):  # per-video action statistics, per keyframe (NaN: none)
        import numpy as np

        at = pq.read_table(sm.input.actions[0])
        A = feature_matrix(at).astype(np.float64)
        pos = {v: i for i, v in enumerate(at.column("video_id").to_pylist())}
        acts = np.full((len(meta), A.shape[1]), np.nan)
        rows = [(i, pos[v]) for i, v in enumerate(meta["video_id"]) if v in pos]
        if rows:
            acts[[i for i, _ in rows]] = A[[j for _, j in rows]]
    split = pq.read_table(sm.input.split).to_pandas()
    rankings = pq.read_table(sm.input.selection).to_pandas()
    search = dict(p.search or {})
    scores = fusion_scores(X, meta, split, rankings, S, list(p.k), p.strain_k,
                           sm.wildcards.selector, dict(p.selector), dict(p.classifiers),
                           p.seed, preset=p.preset, search=search, actions=acts,
                           actions_k=p.actions_k, backbone=sm.wildcards.backbone,
                           layer=sm.wildcards.layer)
    ups = [provenance.read_provenance(f) for f in
           (sm.input.features, sm.input.split, sm.input.selection, sm.input.strain,
            *sm.input.actions)]
    cfg = {"k": list(p.k), "strain_k": p.strain_k, "selector": sm.wildcards.selector,
           **({"actions_k": p.actions_k} if acts is not None else {}),
           "selector_params": dict(p.selector), "classifiers": dict(p.classifiers),
           "seed": p.seed, "preset": p.preset, "search": search,
           "baseline": p.baseline}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    out = pa.Table.from_pandas(scores, FUSION_SCHEMA, preserve_index=False)
    provenance.write_table(out, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
