"""Snakemake entry point: classifier scores for one selector's rankings."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.learn.classify import SCORE_SCHEMA, score_folds
    from neopain.features.tables import feature_matrix

    p = sm.params
    table = pq.read_table(sm.input.features)
    X = feature_matrix(table, p.baseline)
    meta = table.select(["video_id", "subject_id", "frame", "y"]).to_pandas()
    split = pq.read_table(sm.input.split).to_pandas()
    rankings = pq.read_table(sm.input.selection).to_pandas()
    search = dict(p.search or {})
    pose = None
    if p.pose_regression:  # the actions tables' head pose, regressed out per fold
        from neopain.learn.posecontrol import table_pose
        pose = table_pose(table, p.baseline)
    scores = score_folds(X, meta, split, rankings, list(p.k), dict(p.classifiers), p.seed,
                         preset=p.preset, search=search, pose=pose,
                         backbone=sm.wildcards.backbone, layer=sm.wildcards.layer)
    ups = [provenance.read_provenance(f) for f in
           (sm.input.features, sm.input.split, sm.input.selection)]
    cfg = {"k": list(p.k), "classifiers": dict(p.classifiers), "seed": p.seed,
           "preset": p.preset, "search": search, "baseline": p.baseline,
           **({"pose_regression": True} if p.pose_regression else {})}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    out = pa.Table.from_pandas(scores, SCORE_SCHEMA, preserve_index=False)
    provenance.write_table(out, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
