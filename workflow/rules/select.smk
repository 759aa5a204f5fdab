rule select:
    """Rank features per fold with one selector, fitted on the fold's training subjects."""
    input:
        features="results/features/{backbone}/{layer}/features.parquet",
        split="results/splits/{protocol}.parquet",
    output:
        "results/selection/{backbone}/{layer}/{protocol}/{selector}.parquet",
    params:
        selector=lambda wc: SELECTORS[wc.selector],
        max_k=max(config["select"]["k"] + FUSION_RANK_K),  # fusion.smk: fusion.k too
        prefilter=config["select"].get("prefilter", {"method": "none"}),
        baseline=config["baseline"],
        # actions tables only (actions.smk): head pose regressed out within each fold
        pose_regression=lambda wc: ACTIONS_POSE_REGRESSION and wc.backbone == "actions"
        and wc.layer != "pose",
    threads: 2
    log:
        "logs/select/{backbone}/{layer}/{protocol}/{selector}.log",
    resources:
        mem_mb=8000,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/select.py"
