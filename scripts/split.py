"""Snakemake entry point: the subject-disjoint folds of one protocol."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import pyarrow as pa

    from neopain.samples import load_samples
    from neopain.split import SPLIT_SCHEMA, make_split

    p = sm.params
    samples = load_samples(sm.input.samples, p.labels, p.data_root)
    df = make_split(samples, sm.wildcards.protocol, dict(p.spec))
    prov = provenance.make_provenance(
        sm.rule, dict(p.spec), {"samples": provenance.sha256_file(sm.input.samples)},
        params=dict(p.spec))
    provenance.write_table(pa.Table.from_pandas(df, SPLIT_SCHEMA, preserve_index=False),
                           sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
