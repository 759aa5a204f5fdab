rule crop:
    """Align each tracked face to the 5-point template (224x224 RGB, JPEG in Parquet)."""
    input:
        video=video_source,
        track="results/tracks/{video}.parquet",
    output:
        "results/crops/{video}.parquet",
    params:
        video=video_params,
        crop=stage("crop"),
        fps_for_images=config["fps_for_images"],
    threads: 1
    log:
        "logs/crop/{video}.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/crop.py"
