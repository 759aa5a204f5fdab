rule split:
    """Subject-disjoint folds of one protocol."""
    input:
        samples=config["samples"],
    output:
        "results/splits/{protocol}.parquet",
    params:
        spec=lambda wc: PROTOCOLS[wc.protocol],
        labels=config["labels"],
        data_root=config.get("data_root"),
    log:
        "logs/split/{protocol}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/split.py"
