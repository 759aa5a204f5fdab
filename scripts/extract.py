"""Snakemake entry point: deep features of one shard of videos for one backbone (all its
layers); the network is loaded once per shard (see neopain.core.shards). Per-video tables."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime
from neopain.core import shards


def main(sm):
    import functools

    import pyarrow.parquet as pq
    import torch

    from neopain.core.videocache import cache_for
    from neopain.features.backbones import load_backbone
    from neopain.features.extract import extract_video, pick_device, precision_name
    from neopain.features.registry import get_spec
    from neopain.features.weightfiles import locate

    p = sm.params
    torch.set_num_threads(max(1, sm.threads))
    backbone_cfg = dict(p.backbone_cfg)
    # (net, sources): loaded once per shard, and only if a video is not restored
    network = functools.cache(lambda: load_backbone(p.backbone, list(p.layers),
                                                    p.weights_dir, cfg=backbone_cfg))
    device = pick_device(p.device)
    precision = precision_name(device, p.precision)
    stage = {"backbone": p.backbone, "layers": list(p.layers), "dtype": p.dtype,
             "fast_decode": bool(p.fast_decode)}
    if backbone_cfg:
        stage["backbone_cfg"] = backbone_cfg

    def one(i):
        crops = p.crops[i]
        net, sources = network()
        table = extract_video(net, p.videos[i]["video_id"], pq.read_table(crops),
                              pq.read_table(p.keyframes[i]), batch_size=p.batch_size,
                              device=device, precision=p.precision, dtype=p.dtype,
                              workers=p.workers, fast_decode=p.fast_decode)
        prov = provenance.make_provenance(
            "extract", stage, sources, upstream=[provenance.read_provenance(crops)],
            params={**stage, "device": device.type, "precision": precision})
        provenance.write_table(table, sm.output.features[i], prov)

    cache = None
    if sm.config["shards"]["cache"]:   # the weights file's digest is part of every key
        weights = locate(get_spec(p.backbone, backbone_cfg), p.weights_dir)[1]
        cache = cache_for(sm, f"extract/{p.backbone}", ("features",),
                          inputs=("crops", "keyframes"),
                          extra={"weights": weights, "device": device.type,
                                 "precision": precision})
    shards.run_videos(sm, one, cache=cache)
    shards.write_manifest(sm.output.manifest, sm, ("features",))


runtime.run(snakemake, main, cnn=True)  # noqa: F821
