"""Snakemake entry point: LBP / LTP grid descriptors of one video's keyframes."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow.parquet as pq

    from neopain.features.texture import params_for, texture_video

    method = sm.wildcards.texture
    params = params_for(method, sm.params.texture)
    table = texture_video(sm.params.video["video_id"], pq.read_table(sm.input.crops),
                          pq.read_table(sm.input.keyframes), method, params)
    up = provenance.read_provenance(sm.input.crops)
    cfg = {"texture": method, **params}
    prov = provenance.make_provenance(sm.rule, cfg, upstream=[up], params=cfg)
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
