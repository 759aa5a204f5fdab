rule track:
    """Find the face at any in-plane rotation (streamed) and keep one subject across frames."""
    input:
        video_source,
    output:
        table="results/tracks/{video}.parquet",
        qc="results/tracks/{video}.qc.json",
    params:
        video=video_params,
        track=stage("track"),
        fps_for_images=config["fps_for_images"],
    threads: 1
    log:
        "logs/track/{video}.log",
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/track.py"


rule qc_summary:
    """Tracking QC of every video in one table (and every video's montage built), and
    results/qc/tracking.md: the videos that were not ok and the subjects left out."""
    input:
        qc=expand("results/tracks/{video}.qc.json", video=VIDEOS),
        montages=expand("results/qc/{video}.montage.png", video=VIDEOS),
        samples=config["samples"],
    output:
        table="results/qc/tracking.parquet",
        md="results/qc/tracking.md",
    params:
        labels=config["labels"],
        data_root=config.get("data_root"),
    log:
        "logs/qc_summary.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/qc_summary.py"
