"""Snakemake entry point: facial-action descriptors of one video (see neopain.features.actions)."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.features.actions import feature_tables, params_for, video_actions

    vid = sm.params.video["video_id"]
    params = params_for(sm.params.actions)
    track = pq.read_table(sm.input.track)
    table = video_actions(track, pq.read_table(sm.input.crops), params)
    frame_t, video_t = feature_tables(vid, table, pq.read_table(sm.input.keyframes), params)
    ups = [provenance.read_provenance(sm.input.track), provenance.read_provenance(sm.input.crops)]
    prov = provenance.make_provenance(sm.rule, params, upstream=ups, params=params)
    table = table.add_column(0, "video_id", pa.array([vid] * table.num_rows, pa.string()))
    provenance.write_table(table, sm.output.table, prov)
    provenance.write_table(frame_t, sm.output.frame, prov)
    provenance.write_table(video_t, sm.output.video, prov)
    log = runtime.logging.getLogger("neopain.features.actions")
    n_ok = sum(track.column("ok").to_pylist())
    if n_ok and table.num_rows == 0:
        log.warning("%s: %d tracked frames but none has a 3-D face mesh (dense_depth): the "
                    "actions need track.landmarks: facemesh (and `make mesh-weights`)", vid, n_ok)
    log.info(
        "%s: %d meshed frames, %d keyframe rows, %d video row", vid, table.num_rows,
        frame_t.num_rows, video_t.num_rows)


runtime.run(snakemake, main)  # noqa: F821
