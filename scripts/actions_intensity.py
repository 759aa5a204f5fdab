"""Snakemake entry point: the out-of-fold per-frame intensity model of one protocol
(neopain.learn.intensity)."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.features.actions import feature_names
    from neopain.learn.intensity import fold_intensity, summary_markdown
    from neopain.features.tables import feature_matrix

    p = sm.params
    table = pq.read_table(sm.input.features)
    meta = table.select(["video_id", "subject_id", "frame", "timestamp", "y"]).to_pandas()
    pose = None
    if p.pose_regression:
        from neopain.learn.posecontrol import table_pose
        pose = table_pose(table)
    split = pq.read_table(sm.input.split).to_pandas()
    res = fold_intensity(feature_matrix(table), meta, split, feature_names("frame", p.actions),
                         C=float(p.C), pose=pose)
    ups = [provenance.read_provenance(f) for f in (sm.input.features, sm.input.split)]
    cfg = {"C": float(p.C), "pose_regression": bool(p.pose_regression)}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=ups, params=cfg)
    for k in ("frames", "coefficients", "summary"):
        provenance.write_table(pa.Table.from_pandas(res[k], preserve_index=False),
                               sm.output[k], prov)
    provenance.write_text(summary_markdown(res["summary"], res["coefficients"]), sm.output.md)
    r = res["summary"].iloc[0]
    runtime.logging.getLogger("neopain.learn.intensity").info(
        "%s: %d frames out of fold; frame AUC model %.3f vs PSPI-like %.3f", r["protocol"],
        r["n_frames"], r["frame_auc_intensity"], r["frame_auc_pspi"])


runtime.run(snakemake, main)  # noqa: F821
