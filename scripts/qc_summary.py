"""Snakemake entry point: gather tracking QC of all videos."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import json

    import pyarrow as pa

    rows = [json.loads(open(f).read()) for f in sm.input]
    keys = ["video_id", "n_frames", "n_ok", "success_rate", "status"]
    table = pa.table({k: [r.get(k) for r in rows] for k in keys})
    prov = provenance.make_provenance(sm.rule, {}, {})
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
