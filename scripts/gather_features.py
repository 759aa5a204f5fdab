"""Snakemake entry point: the feature table of one backbone x layer."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime


def main(sm):
    from neopain.features.tables import gather_layer
    from neopain.core.provenance import META_KEY, canonical_json
    from neopain.core.samples import load_samples

    p = sm.params
    samples = load_samples(sm.input.samples, p.labels, p.data_root, check_paths=False)
    if len(p.video_ids) != len(p.video_files):
        raise ValueError(f"gather_features: {len(p.video_ids)} video ids for "
                         f"{len(p.video_files)} per-video tables")
    per_video = dict(zip(p.video_ids, p.video_files))   # the rule names each file's video
    ups = [provenance.read_provenance(f) for f in p.video_files]
    prov = provenance.make_provenance(
        sm.rule, {"backbone": sm.wildcards.backbone, "layer": sm.wildcards.layer,
                  "positive_label": p.positive_label},
        {"samples": provenance.sha256_file(sm.input.samples)}, upstream=ups,
        params={"backbone": sm.wildcards.backbone, "layer": sm.wildcards.layer})
    meta = {META_KEY: canonical_json(prov).encode(),
            b"neopain.backbone": sm.wildcards.backbone.encode(),
            b"neopain.layer": sm.wildcards.layer.encode()}
    with provenance.atomic_path(sm.output[0]) as tmp:
        n = gather_layer(per_video, sm.wildcards.layer, samples.loc[list(per_video)],
                         p.positive_label, tmp, meta)
    runtime.logging.getLogger("gather").info("%d rows from %d videos", n, len(per_video))


runtime.run(snakemake, main)  # noqa: F821
