# All layers of one backbone for a shard of videos' keyframes: the network is loaded once
# per shard (docs/scale.md); one table per video. Rule names: extract_<backbone>_<shard>
# (one rule per backbone, no wildcard: planning matches explicit paths, docs/scale.md).
for _backbone in BACKBONES:
    for _shard, _vids in SHARDS.items():

        rule:
            name:
                f"extract_{_backbone}_{_shard}"
            input:
                # the track shard's manifest stands for its crops and keyframes (planning
                # stays linear in shards: docs/scale.md)
                track=shard_manifest("track", _shard),
                # a checkpoint this workflow fine-tunes (finetune.smk) as the backbone's weights
                weights=[w for w in [str(BACKBONES[_backbone].get("weights_file", ""))]
                         if w.startswith("results/")],
            output:
                features=per_video(f"results/features/{_backbone}/_per_video/{{video}}.parquet",
                                   _vids),
                manifest=shard_manifest(f"features/{_backbone}", _shard),
            params:
                videos=shard_videos(_vids),
                crops=per_video("results/crops/{video}.parquet", _vids),
                keyframes=per_video("results/keyframes/{video}.parquet", _vids),
                backbone=_backbone,
                layers=BACKBONES[_backbone]["layers"],
                backbone_cfg={k: v for k, v in BACKBONES[_backbone].items() if k != "layers"},
                weights_dir=config["extract"]["weights_dir"],
                device=config["extract"]["device"],
                batch_size=config["extract"]["batch_size"],
                precision=config["extract"]["precision"],
                dtype=config["extract"]["dtype"],
                workers=config["extract"]["workers"],
                fast_decode=config["extract"]["fast_decode"],
            threads: 2
            priority: 1  # the chain to the tables first (docs/scale.md: what runs first)
            log:
                f"logs/extract/{_backbone}/_shard_{_shard}.log",
            group:
                "shards"
            resources:
                gpu=1,
                mem_mb=8000,
                runtime=10 + 2 * len(_vids),
            conda:
                "../../envs/core.yaml"
            script:
                "../../scripts/extract.py"


rule gather_features:
    """One table per backbone x layer, one row group per video, with ids and labels."""
    input:
        # a CNN backbone's shard manifests (its per-video tables are their outputs); the
        # per-video tables themselves for the one-job-per-video stages (texture, actions)
        videos=lambda wc: (
            [shard_manifest(f"features/{wc.backbone}", sh) for sh in SHARDS]
            if wc.backbone in BACKBONES
            else per_video(f"results/features/{wc.backbone}/_per_video/{{video}}.parquet",
                           VIDEOS)
        ),
        samples=config["samples"],
    output:
        "results/features/{backbone}/{layer}/features.parquet",
    params:
        video_files=lambda wc: per_video(
            f"results/features/{wc.backbone}/_per_video/{{video}}.parquet", VIDEOS),
        video_ids=VIDEOS,
        positive_label=config["positive_label"],
        labels=config["labels"],
        data_root=config["data_root"],
    priority: 1  # the chain to the tables first (docs/scale.md: what runs first)
    log:
        "logs/gather_features/{backbone}/{layer}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/gather_features.py"
