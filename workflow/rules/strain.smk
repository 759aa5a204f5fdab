# Optical-strain features (issue 6; the handcrafted half of the paper's Table 7).
# strain_<shard>: each video's strain-over-time signal per face region (Farneback flow between
# consecutive aligned crops); gather_strain: peak statistics per region of every video.
# Settings (STRAIN*): common/settings.smk.


for _shard, _vids in SHARDS.items():

    rule:
        name:
            f"strain_{_shard}"
        input:
            track=shard_manifest("track", _shard),  # stands for the shard's crops
        output:
            signals=per_video("results/strain/{video}.parquet", _vids),
            manifest=shard_manifest("strain", _shard),
        params:
            videos=shard_videos(_vids),
            crops=per_video("results/crops/{video}.parquet", _vids),
            strain=STRAIN_SIGNAL,
        threads: 1
        log:
            f"logs/shards/strain_{_shard}.log",
        group:
            "shards"
        resources:
            mem_mb=2000,
            runtime=10 + len(_vids),
        conda:
            "../../envs/core.yaml"
        script:
            "../../scripts/strain.py"


rule gather_strain:
    """Per-video strain features (peaks of each region's signal) of every video."""
    input:
        shards=[shard_manifest("strain", sh) for sh in SHARDS],
        samples=config["samples"],
    output:
        "results/strain/_features.parquet",
    params:
        signals=per_video("results/strain/{video}.parquet", VIDEOS),
        video_ids=VIDEOS,  # parallel to signals
        peaks=STRAIN["peaks"],
        positive_label=config["positive_label"],
        labels=config["labels"],
        data_root=config["data_root"],
    log:
        "logs/gather_strain.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/gather_strain.py"
