rule split:
    """Subject-disjoint folds of one protocol, over the subjects with usable frames."""
    input:
        samples=config["samples"],
        qc=expand("results/tracks/{video}.qc.json", video=VIDEOS),
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
