"""Snakemake entry point: deep features of one video for one backbone (all its layers)."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    import pyarrow.parquet as pq

    from neopain.backbones import load_backbone
    from neopain.extract import extract_video, pick_device

    p = sm.params
    net, sources = load_backbone(sm.wildcards.backbone, list(p.layers), p.weights_dir)
    device = pick_device(p.device)
    table = extract_video(net, p.video["video_id"], pq.read_table(sm.input.crops),
                          pq.read_table(sm.input.keyframes), batch_size=p.batch_size,
                          device=device)
    ups = [provenance.read_provenance(sm.input.crops)]
    prov = provenance.make_provenance(
        sm.rule, {"backbone": sm.wildcards.backbone, "layers": list(p.layers)},
        sources, upstream=ups,
        params={"backbone": sm.wildcards.backbone, "layers": list(p.layers),
                "device": device.type, "precision": "bf16" if device.type == "cuda" else "fp32"})
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
