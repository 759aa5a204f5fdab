"""Snakemake entry point: per-video strain features (peaks per region) of every video."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    import pyarrow.parquet as pq

    from neopain.core.samples import load_samples
    from neopain.features.strainfeatures import features_table, peak_params, video_features

    p = sm.params
    peaks = peak_params(p.peaks)
    samples = load_samples(sm.input.samples, p.labels, p.data_root, check_paths=False)
    rows, ups = [], []
    if len(p.video_ids) != len(p.signals):
        raise ValueError(f"gather_strain: {len(p.video_ids)} video ids for "
                         f"{len(p.signals)} strain signal tables")
    for vid, f in zip(p.video_ids, p.signals):   # the rule names each file's video
        row = samples.loc[vid]
        feats = video_features(pq.read_table(f), peaks)
        rows.append({"video_id": vid, "subject_id": row["subject_id"], "label": row["label"],
                     "y": int(row["label"] == p.positive_label), **feats})
        ups.append(provenance.read_provenance(f))
    rows.sort(key=lambda r: r["video_id"])
    cfg = {"peaks": peaks, "positive_label": p.positive_label}
    prov = provenance.make_provenance(
        sm.rule, cfg, {"samples": provenance.sha256_file(sm.input.samples)}, upstream=ups,
        params=cfg)
    provenance.write_table(features_table(rows), sm.output[0], prov)
    missing = [r["video_id"] for r in rows if r["reason"]]
    runtime.logging.getLogger("gather_strain").info(
        "%d videos, %d without strain features%s", len(rows), len(missing),
        f": {missing}" if missing else "")


runtime.run(snakemake, main)  # noqa: F821
