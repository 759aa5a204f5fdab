"""Snakemake entry point: the nested model search of one protocol."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import logging
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.features.baseline import single_recording_subjects
    from neopain.learn.nested import (build_views, candidates, common_videos,
                                      nested_cv_and_permuted)
    from neopain.features.tables import read_features

    log = logging.getLogger("nested")
    p, spec = sm.params, dict(sm.params.spec)
    tables = {}
    for (b, layer), f in zip(p.tables, sm.input.features):
        tables[(b, layer)] = read_features(f, pose=bool(p.pose_regression))
    tables, dropped = common_videos(tables)
    if dropped:
        log.warning("videos missing from some feature tables, left out: %s", dropped)
    meta = next(iter(tables.values()))[1]
    single = single_recording_subjects(meta["subject_id"], meta["video_id"])
    if single and set(spec["baselines"]) - {"none"}:
        log.info("subjects with one recording (degenerate baseline: their own recording): "
                 "%s", single)
    views = build_views(tables, spec["baselines"], dict(spec["poolings"]))
    cands = candidates(views, list(spec["selection"]), dict(spec["models"]))
    split = pq.read_table(sm.input.split).to_pandas()
    kw = {"inner_splits": spec["inner_splits"], "seed": p.seed,
          "ensembles": list(spec["ensembles"]), "pose_regression": bool(p.pose_regression)}
    if p.pose_regression:
        log.info("head pose regressed out inside every fit of: %s",
                 [k for k, t in tables.items() if t[2] is not None])
    t0 = time.perf_counter()
    res = nested_cv_and_permuted(views, cands, split, permutation=bool(spec["permutation"]),
                                 workers=sm.threads, **kw)
    log.info("%d candidates x %d outer folds%s in %.1f s", len(cands),
             split["fold"].nunique(), ", and again on shuffled labels" if spec["permutation"]
             else "", time.perf_counter() - t0)
    ups = [provenance.read_provenance(f) for f in [*sm.input.features, sm.input.split]]
    cfg = {"spec": spec, "tables": [list(t) for t in p.tables], "seed": p.seed,
           **({"pose_regression": True} if p.pose_regression else {})}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    for name in ("scores", "choices", "predictions", "permuted"):
        provenance.write_table(pa.Table.from_pandas(res[name], preserve_index=False),
                               sm.output[name], prov)


runtime.run(snakemake, main)  # noqa: F821
