"""Snakemake entry point: the subject-disjoint folds of one protocol, over the subjects
with usable frames (the others are listed in the table's metadata and the log)."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import json
    from pathlib import Path

    import pyarrow as pa

    from neopain.core.samples import load_samples
    from neopain.core.samples import usable_subjects
    from neopain.learn.split import SPLIT_SCHEMA, make_split

    p = sm.params
    log = runtime.logging.getLogger("split")
    samples = load_samples(sm.input.samples, p.labels, p.data_root, check_paths=False)
    qc = {Path(f).name.removesuffix(".qc.json"): json.loads(Path(f).read_text())
          for f in sm.params.qc}
    kept, excluded = usable_subjects(samples, qc)
    for r in excluded.itertuples():
        log.warning("subject %s left out of protocol %s: %s", r.subject_id,
                    sm.wildcards.protocol, r.reason)
    try:
        df = make_split(kept, sm.wildcards.protocol, dict(p.spec))
    except ValueError as exc:
        left = "; ".join(f"{r.subject_id} ({r.reason})" for r in excluded.itertuples())
        raise ValueError(f"{exc} after leaving out the subjects without usable frames: "
                         f"{left or 'none'}") from None
    left_out = sorted(excluded["subject_id"])
    prov = provenance.make_provenance(
        sm.rule, dict(p.spec), {"samples": provenance.sha256_file(sm.input.samples)},
        params={**dict(p.spec), "subjects_left_out": left_out})
    table = pa.Table.from_pandas(df, SPLIT_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}),
         b"neopain.excluded": excluded.to_json(orient="records").encode()})
    provenance.write_table(table, sm.output[0], prov)

runtime.run(snakemake, main)  # noqa: F821
