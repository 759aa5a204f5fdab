"""Snakemake entry point: gather tracking QC of all videos."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import json

    import pyarrow as pa

    rows = [json.loads(open(f).read()) for f in sm.input.qc]
    montages = {str(m).rsplit("/", 1)[-1].removesuffix(".montage.png"): str(m)
                for m in sm.input.montages}
    schema = pa.schema([("video_id", pa.string()), ("n_frames", pa.int64()),
                        ("n_ok", pa.int64()), ("success_rate", pa.float64()),
                        ("status", pa.string()), ("error", pa.string()),
                        ("detector", pa.string()), ("montage", pa.string())])
    cols = {k: [r.get(k) for r in rows]
            for k in ("video_id", "n_frames", "n_ok", "success_rate", "status", "error")}
    cols["detector"] = [r.get("detector", {}).get("name") for r in rows]
    cols["montage"] = [montages.get(r.get("video_id")) for r in rows]
    table = pa.table(cols, schema=schema)
    prov = provenance.make_provenance(sm.rule, {}, {})
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
