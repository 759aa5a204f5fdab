# Aligned 224x224 face crops and keyframes are made by the shard jobs of track.smk (one
# decode pass per video); the tracking QC montages of each shard are made here.

for _shard, _vids in SHARDS.items():

    rule:
        name:
            f"qc_montage_{_shard}"
        input:
            track=shard_manifest("track", _shard),  # stands for the shard's per-video files
        output:
            montages=[
                report(
                    path,
                    caption="../report/montage.rst",
                    category="2. Tracking QC",
                    subcategory="Montages",
                )
                for path in per_video("results/qc/{video}.montage.png", _vids)
            ],
            manifest=shard_manifest("qc_montage", _shard),
        params:
            videos=shard_videos(_vids),
            crops=per_video("results/crops/{video}.parquet", _vids),
            tracks=per_video("results/tracks/{video}.parquet", _vids),
            qc=per_video("results/tracks/{video}.qc.json", _vids),
            report=stage("report"),
            crop_size=config["crop"]["size"],
        log:
            f"logs/shards/qc_montage_{_shard}.log",
        group:
            "shards"
        conda:
            "../../envs/core.yaml"
        script:
            "../../scripts/qc_montage.py"
