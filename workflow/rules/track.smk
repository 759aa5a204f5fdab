# Per-video work in shards (docs/scale.md): one job per shard of videos (SHARDS, common.smk)
# tracks, crops and picks keyframes of each video in one decode pass, paying the start-up
# (interpreter, imports, detector and mesh models) once per shard. Each video still gets its
# own files and log; adding a video reruns its shard only. Rule names: track_<shard>.
# On a cluster, a shard's jobs form one group job (group "shards"; profiles/slurm).

for _shard, _vids in SHARDS.items():

    rule:
        name:
            f"track_{_shard}"
        input:
            videos=shard_sources(_vids),
        output:
            tracks=per_video("results/tracks/{video}.parquet", _vids),
            qc=per_video("results/tracks/{video}.qc.json", _vids),
            crops=per_video("results/crops/{video}.parquet", _vids),
            keyframes=per_video("results/keyframes/{video}.parquet", _vids),
            manifest=shard_manifest("track", _shard),
        params:
            videos=shard_videos(_vids),
            track=stage("track"),
            crop=stage("crop"),
            keyframes=stage("keyframes"),
            fps_for_images=config["fps_for_images"],
            shards={"keep_frames_mb": config["shards"]["keep_frames_mb"]},
        threads: 1
        log:
            shard=f"logs/shards/track_{_shard}.log",
            videos=per_video("logs/track/{video}.log", _vids),
        group:
            "shards"
        resources:
            mem_mb=4000,
            runtime=10 + 2 * len(_vids),
        conda:
            "../../envs/core.yaml"
        script:
            "../../scripts/track.py"


rule qc_summary:
    """Tracking QC of every video in one table (and every video's montage built), and
    results/qc/tracking.md: the videos that were not ok and the subjects left out."""
    input:
        tracks=TRACK_MANIFESTS,  # stand for every video's QC record and montage
        montages=[shard_manifest("qc_montage", sh) for sh in SHARDS],
        samples=config["samples"],
    output:
        table="results/qc/tracking.parquet",
        md="results/qc/tracking.md",
    params:
        qc=per_video("results/tracks/{video}.qc.json", VIDEOS),
        montages=per_video("results/qc/{video}.montage.png", VIDEOS),
        labels=config["labels"],
        data_root=config["data_root"],
    log:
        "logs/qc_summary.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/qc_summary.py"
