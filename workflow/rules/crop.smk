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


rule qc_montage:
    """PNG montage of sampled aligned crops with landmarks (faces only if report.show_faces)."""
    input:
        crops="results/crops/{video}.parquet",
        track="results/tracks/{video}.parquet",
        qc="results/tracks/{video}.qc.json",
    output:
        report(
            "results/qc/{video}.montage.png",
            caption="../report/montage.rst",
            category="2. Tracking QC",
            subcategory="Montages",
        ),
    params:
        report=stage("report"),
        crop_size=config.get("crop", {}).get("size", 224),
    log:
        "logs/qc_montage/{video}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/qc_montage.py"
