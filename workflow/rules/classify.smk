rule classify:
    """Every k x classifier on one selector's features; per-frame test scores."""
    input:
        features="results/features/{backbone}/{layer}/features.parquet",
        split="results/splits/{protocol}.parquet",
        selection="results/selection/{backbone}/{layer}/{protocol}/{selector}.parquet",
    output:
        "results/scores/{backbone}/{layer}/{protocol}/{selector}.parquet",
    params:
        k=config["select"]["k"],
        classifiers=config["classify"]["classifiers"],
        preset=config["classify"].get("preset", "paper"),
        search=config["classify"].get("search", {"enabled": False}),
        seed=config.get("seed", 0),
        baseline=config["baseline"],
        # actions tables only (actions.smk): head pose regressed out within each fold
        pose_regression=lambda wc: ACTIONS_POSE_REGRESSION and wc.backbone == "actions"
        and wc.layer != "pose",
    threads: 1
    log:
        "logs/classify/{backbone}/{layer}/{protocol}/{selector}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/classify.py"
