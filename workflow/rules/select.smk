rule select:
    """Rank features per fold with one selector, fitted on the fold's training subjects."""
    input:
        features="results/features/{backbone}/{layer}/features.parquet",
        split="results/splits/{protocol}.parquet",
    output:
        "results/selection/{backbone}/{layer}/{protocol}/{selector}.parquet",
    params:
        selector=lambda wc: SELECTORS[wc.selector],
        max_k=SELECT_MAX_K,  # select.k and, with strain, fusion.k (Table 7)
        prefilter=config["select"]["prefilter"],
        baseline=config["baseline"],
        pose_regression=regress_pose,  # actions tables only (actions.smk)
    threads: 2
    priority: 1  # the chain to the tables first (docs/scale.md: what runs first)
    log:
        "logs/select/{backbone}/{layer}/{protocol}/{selector}.log",
    resources:
        mem_mb=8000,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/select.py"
