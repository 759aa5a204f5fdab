rule keyframes:
    """Drop near-duplicate crops (mean |diff| of grey thumbnails below a threshold)."""
    input:
        "results/crops/{video}.parquet",
    output:
        "results/keyframes/{video}.parquet",
    params:
        keyframes=stage("keyframes"),
    log:
        "logs/keyframes/{video}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/keyframes.py"
