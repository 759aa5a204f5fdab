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
        preset=config["classify"]["preset"],
        search=config["classify"]["search"],
        seed=config["seed"],
        baseline=config["baseline"],
        pose_regression=regress_pose,  # actions tables only (actions.smk)
    threads: 1
    log:
        "logs/classify/{backbone}/{layer}/{protocol}/{selector}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/classify.py"
