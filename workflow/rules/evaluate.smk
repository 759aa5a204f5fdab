rule evaluate:
    """Frame- and video-level metrics of every configuration; the paper's Table 5."""
    input:
        [
            f"results/scores/{b}/{layer}/{p}/{s}.parquet"
            for b, layer in LAYER_TARGETS
            for p in PROTOCOLS
            for s in SELECTORS
        ],
    output:
        metrics="results/evaluation/metrics.parquet",
        table5=report("results/evaluation/table5.md", category="Results"),
        table5_parquet="results/evaluation/table5.parquet",
        metrics_md="results/evaluation/metrics.md",
    params:
        aggregation=config.get("evaluate", {}).get("video_aggregation", "mean"),
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/evaluate.py"
