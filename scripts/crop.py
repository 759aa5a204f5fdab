"""Snakemake entry point: aligned 224x224 face crops of one video (see neopain.crop)."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import pyarrow.parquet as pq

    from neopain.crop import crop_video

    p = sm.params
    track = pq.read_table(sm.input.track)
    table = crop_video(p.video["path"], track, size=p.crop.get("size", 224),
                       jpeg_quality=p.crop.get("jpeg_quality", 95),
                       fps_for_images=p.fps_for_images)
    up = provenance.read_provenance(sm.input.track)
    prov = provenance.make_provenance(sm.rule, runtime.stage_config(sm), upstream=[up],
                                      params=dict(p.crop))
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
