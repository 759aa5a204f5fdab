"""Snakemake entry point: keyframes of one video (see neopain.keyframes)."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import pyarrow.parquet as pq

    from neopain.keyframes import select_keyframes

    cfg = dict(sm.params.keyframes)
    crops = pq.read_table(sm.input[0])
    table = select_keyframes(crops, **cfg)
    up = provenance.read_provenance(sm.input[0])
    prov = provenance.make_provenance(sm.rule, runtime.stage_config(sm), upstream=[up],
                                      params=cfg)
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
